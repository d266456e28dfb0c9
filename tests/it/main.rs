//! The integration tests: one binary. Each test starts the real `edgesnap`
//! binary from a generated config on free loopback ports, pushes real RTMP
//! (ffmpeg, GStreamer, nginx-rtmp relaying, or a test publisher for crafted
//! streams), and checks what lands in storage, the index and the API.

// Helpers are `pub` for the test modules of this one binary.
#![allow(unreachable_pub)]

mod harness;
mod media;
mod publisher;

mod api;
mod bad_input;
mod callbacks;
mod capacity;
mod cli;
mod config;
mod console;
mod dist;
mod durability;
mod fleet;
mod fuzz;
mod hostile;
mod isolation;
mod limits;
mod logs;
mod monitoring;
mod pipeline;
mod plugins;
mod query;
mod sessions;
mod sources;
