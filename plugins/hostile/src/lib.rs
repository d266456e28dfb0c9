//! A hostile plugin for the tests. It passes its conformance run (stream
//! `cam1` is named politely), then misbehaves by stream name, so one upload
//! shows the host containing each attack:
//!
//! | stream | `name` does |
//! |---|---|
//! | `loop` | loops forever |
//! | `bomb` | allocates until memory runs out |
//! | `recurse` | recurses without end |
//! | `panic` | panics |
//! | `huge` | returns 10 000 placements |
//! | `longkey` | returns one key of 1 MiB |
//! | `dotdot` | a key with `..` into another tenant's folder |
//! | `abs` | an absolute path |
//! | `ctrl` | a key with control characters |
//! | `backslash` | a key with `\` separators |
//! | `peek` | reads the clock, the environment, the filesystem and randomness into its key |
//! | `statefill` | writes 16 values of 60 KiB under new keys each call (1 MiB of state in ~1 call) |
//! | `bigvalue` | writes one state value of 65 KiB |
//! | `bigkey` | writes under a state key of 300 bytes |
//! | `manywrites` | makes 65 state writes |
//! | `remember` | counts its calls in a static and reads, then sets, the last byte of a static 1 MiB array: `live/remember/{calls}-{byte}.jpg` (a fresh instance every call names `1-0`) |
//! | `hog…` | 1000 random reads and writes over 4 MiB per pixel of picture width (320 wide: about 16 M fuel, within the default limits, milliseconds of CPU; 1280 wide: about 64 M fuel, for a domain whose limits allow it) |
//!
//! Its deletion answer for stream `faildel` selects everything, then panics;
//! for `notmine` it names an id that is not on the page. Any other stream is
//! named `{app}/{stream}/{sequence}.jpg`, sequential.

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::state;
use edgesnap::policy::types::Mode;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

struct Hostile;

/// What `remember` would carry from one call to the next if an instance's
/// memory were not fresh: a counter in the first pages, a byte past the
/// first MiB (beyond what the host resets in place).
static CALLS: AtomicU32 = AtomicU32::new(0);
static FAR: [AtomicU8; 1 << 20] = [const { AtomicU8::new(0) }; 1 << 20];

fn seq(key: String) -> Vec<Placement> {
    vec![Placement { key, mode: Mode::Sequential }]
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    std::hint::black_box(recurse(std::hint::black_box(n + 1)) + 1)
}

/// What the plugin can see of the world: the clock (the host fixes it at
/// the capture time), the environment and the filesystem (none), and
/// randomness (seeded by the host, so the same input gives the same key).
fn peek() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let env = std::env::vars().count();
    let fs = std::fs::read_dir("/").is_ok() || std::fs::read_dir(".").is_ok();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(1);
    format!("peek/{now}-{env}-{fs}-{:016x}.jpg", h.finish())
}

impl Guest for Hostile {
    fn name(capture: Capture, _template: Template) -> Result<Vec<Placement>, String> {
        Ok(match capture.stream.as_str() {
            "loop" => loop {
                std::hint::black_box(&capture);
            },
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => seq(recurse(0).to_string()),
            "panic" => panic!("hostile plugin panics on purpose"),
            "huge" => (0..10_000).flat_map(|i| seq(i.to_string())).collect(),
            "longkey" => seq("a".repeat(1 << 20)),
            "dotdot" => seq("../other.example/live/cam1.jpg".into()),
            "abs" => seq("/etc/passwd".into()),
            "ctrl" => seq("live/a\u{7}\nb.jpg".into()),
            "backslash" => seq("live\\..\\..\\x.jpg".into()),
            "peek" => seq(peek()),
            "statefill" => {
                for i in 0..16 {
                    state::set(&format!("fill-{}-{i}", capture.sequence), &vec![7u8; 60 << 10]);
                }
                seq(format!("{}/{}/{}.jpg", capture.app, capture.stream, capture.sequence))
            }
            "bigvalue" => {
                state::set("big", &vec![7u8; 65 << 10]);
                seq("live/bigvalue.jpg".into())
            }
            "bigkey" => {
                state::set(&"k".repeat(300), b"v");
                seq("live/bigkey.jpg".into())
            }
            s if s.starts_with("hog") => {
                let mut mem = vec![0u32; 1 << 20];
                let mut x = (capture.sequence as u32) | 1;
                let mut acc = 0u32;
                for _ in 0..capture.width * 1000 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = x as usize & (mem.len() - 1);
                    acc = acc.wrapping_add(mem[i]);
                    mem[i] = acc ^ x;
                }
                std::hint::black_box(acc);
                seq(format!("{}/{}/{}.jpg", capture.app, capture.stream, capture.sequence))
            }
            "remember" => {
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                let byte = FAR[FAR.len() - 1].swap(1, Ordering::Relaxed);
                seq(format!("live/remember/{calls}-{byte}.jpg"))
            }
            "manywrites" => {
                for i in 0..65 {
                    state::set(&format!("w{i}"), b"v");
                }
                seq("live/manywrites.jpg".into())
            }
            _ => seq(format!("{}/{}/{}.jpg", capture.app, capture.stream, capture.sequence)),
        })
    }

    fn select_deletions(stream: StreamRef, page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        match stream.stream.as_str() {
            "faildel" => {
                let all: Vec<String> = page.items.iter().map(|s| s.id.clone()).collect();
                std::hint::black_box(&all);
                panic!("hostile plugin panics after selecting everything");
            }
            "notmine" => Ok(Deletions { ids: vec!["0".repeat(32)], done: true }),
            _ => Ok(Deletions { ids: Vec::new(), done: true }),
        }
    }
}

export!(Hostile);
