//! An example tenant policy of contract 1.1.0 (`wit/1.1/policy.wit`): every
//! capture becomes one sequential object in a folder of its rendition,
//! `{app}/{stream}/{width}x{height}-q{quality}/{sequence}.{jpg|webp}`, the
//! size being the stored picture's and the extension the template's format.
//! It logs the rest of what the template says about the picture.

// The generated guest bindings take one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit/1.1" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/1.1/policy.wit");

use edgesnap::policy::log::{Level, log};
use edgesnap::policy::output::ImageFormat;
use edgesnap::policy::types::Mode;

struct RenditionFolders;

impl Guest for RenditionFolders {
    fn name(capture: Capture, _template: Template, output: Output) -> Result<Vec<Placement>, String> {
        let extension = match output.format {
            ImageFormat::Jpg => "jpg",
            ImageFormat::Webp => "webp",
        };
        log(
            Level::Info,
            &format!(
                "{extension} asked {}x{} q{} skip-blank {} storyboard {} s",
                output.width, output.height, output.jpeg_quality, output.skip_blank, output.storyboard_seconds
            ),
        );
        let key = format!(
            "{}/{}/{}x{}-q{}/{}.{extension}",
            capture.app, capture.stream, capture.width, capture.height, output.jpeg_quality, capture.sequence
        );
        Ok(vec![Placement { key, mode: Mode::Sequential }])
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(RenditionFolders);
