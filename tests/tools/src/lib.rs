//! Test tools shared by `tests/it` and `host/examples` (the load generator,
//! the decoder floor): one FLV reader and one RTMP publisher's byte forms,
//! so the crafted-stream tests and the load generator cannot diverge.

pub mod flv;
pub mod rtmp;
