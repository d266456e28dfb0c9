//! Live storyboards (docs/templates.md#storyboards): per stream and period
//! of a template's `storyboard` seconds, sprite sheets of the period's
//! snapshots scaled to tiles, and a WebVTT file whose cues map each
//! snapshot's time range to its tile (`{P}-{n}.jpg#xywh=x,y,w,h`), the form
//! players use for scrub previews. Both are rewritten after each snapshot of
//! the period, beside the snapshots on the template's storage target:
//! `{app}/{stream}/storyboard/{P}.vtt` and `{P}-{n}.jpg`, `P` the period's
//! start (unix seconds, periods aligned on the clock), `n` the sheet.
//!
//! Runs after a capture is stored, under the stream's store lock (so a
//! stream's tiles are added in order), and never fails the capture: an
//! error is logged and counted. Memory: the current sheet's pixels per
//! stream with a storyboard (5x5 tiles of 160 px wide, about 1 MB at 16:9).
//! A stream without one in memory (a restart, a republish after the board
//! was dropped) reads the period's WebVTT and last sheet back and goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::storage::{Storage, StorageError};

/// Tile width (px); the height follows the period's first picture.
pub const TILE_W: usize = 160;
/// Tiles per sheet row and column.
pub const GRID: usize = 5;
/// The tallest tile (a very tall picture's is squeezed to it).
const MAX_TILE_H: usize = 640;
/// Most tiles a board takes (the template allows 1000 a period; a template
/// changed mid-period to a shorter interval could ask for more).
const MAX_TILES: usize = 2000;
const QUALITY: u8 = 80;

#[derive(Debug, thiserror::Error)]
pub enum StoryboardError {
    #[error(transparent)]
    Picture(#[from] crate::thumbs::ThumbError),
    #[error("encode the sheet: {0}")]
    Encode(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the period's storyboard is full ({MAX_TILES} snapshots)")]
    Full,
}

/// One snapshot on a storyboard.
#[derive(Debug, Clone)]
struct Tile {
    create_ms: u64,
    sheet: usize,
    x: usize,
    y: usize,
}

/// A stream's storyboard of the current period.
struct Board {
    period_start_ms: u64,
    period_ms: u64,
    interval_ms: u64,
    tile_h: usize,
    tiles: Vec<Tile>,
    /// RGB of the sheet being filled.
    sheet: Vec<u8>,
}

impl Board {
    fn sheet_w() -> usize {
        TILE_W * GRID
    }

    /// Pastes the picture as the next tile; returns the sheet's number.
    fn add(&mut self, create_ms: u64, rgb: &[u8], w: usize, h: usize) -> usize {
        let i = self.tiles.len();
        let (sheet, at) = (i / (GRID * GRID), i % (GRID * GRID));
        if at == 0 {
            self.sheet = vec![0; Self::sheet_w() * self.tile_h * GRID * 3];
        }
        let (x, y) = ((at % GRID) * TILE_W, (at / GRID) * self.tile_h);
        let tile = crate::thumbs::area_average(rgb, w, h, TILE_W, self.tile_h);
        let row_bytes = TILE_W * 3;
        for (r, line) in tile.chunks_exact(row_bytes).enumerate() {
            let at = ((y + r) * Self::sheet_w() + x) * 3;
            self.sheet[at..at + row_bytes].copy_from_slice(line);
        }
        self.tiles.push(Tile { create_ms, sheet, x, y });
        sheet
    }

    /// A board read back from its WebVTT (written by [`Board::vtt`]) and
    /// its last sheet's JPG; `None` if either is not what this module writes.
    fn recover(start_ms: u64, period_ms: u64, interval_ms: u64, vtt: &str, last_sheet: &[u8]) -> Option<Board> {
        let mut tiles = Vec::new();
        let mut tile_h = 0;
        let mut lines = vtt.lines();
        while let Some(line) = lines.next() {
            let Some((from, _)) = line.split_once(" --> ") else { continue };
            let (sheet, xywh) = lines.next()?.split_once("#xywh=")?;
            let n = sheet.strip_suffix(".jpg")?.rsplit_once('-')?.1.parse().ok()?;
            let v: Vec<usize> = xywh.split(',').map(|x| x.parse().ok()).collect::<Option<_>>()?;
            let [x, y, w, h] = v[..] else { return None };
            (w == TILE_W).then_some(())?;
            tile_h = h;
            tiles.push(Tile { create_ms: start_ms + parse_cue_time(from)?, sheet: n, x, y });
        }
        let sheet = if tiles.is_empty() {
            Vec::new()
        } else {
            let (rgb, w, h) = crate::thumbs::decode_rgb(last_sheet).ok()?;
            (w == Self::sheet_w() && h == tile_h * GRID).then_some(rgb)?
        };
        // Tiles fill sheets in order: the count says where the next one goes.
        let consistent = tiles.iter().enumerate().all(|(i, t)| t.sheet == i / (GRID * GRID));
        consistent.then_some(Board { period_start_ms: start_ms, period_ms, interval_ms, tile_h, tiles, sheet })
    }

    fn encode_sheet(&self) -> Result<Vec<u8>, StoryboardError> {
        let mut out = Vec::with_capacity(self.sheet.len() / 8);
        jpeg_encoder::Encoder::new(&mut out, QUALITY)
            .encode(&self.sheet, Self::sheet_w() as u16, (self.tile_h * GRID) as u16, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| StoryboardError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// The WebVTT: one cue per tile, from its capture to the next one's
    /// (the last: one interval, within the period), times from the
    /// period's start.
    fn vtt(&self) -> String {
        let p = self.period_start_ms / 1000;
        let mut out = String::from("WEBVTT\n\n");
        for (i, t) in self.tiles.iter().enumerate() {
            let start = t.create_ms - self.period_start_ms;
            let end = match self.tiles.get(i + 1) {
                Some(next) => next.create_ms - self.period_start_ms,
                None => (start + self.interval_ms).min(self.period_ms),
            };
            out += &format!(
                "{} --> {}\n{p}-{}.jpg#xywh={},{},{TILE_W},{}\n\n",
                cue_time(start),
                cue_time(end.max(start + 1)),
                t.sheet,
                t.x,
                t.y,
                self.tile_h
            );
        }
        out
    }
}

/// `HH:MM:SS.mmm`.
fn cue_time(ms: u64) -> String {
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn parse_cue_time(t: &str) -> Option<u64> {
    let (hms, ms) = t.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?)
}

/// The folder of a stream's storyboards on its storage target.
pub fn folder(app: &str, stream: &str) -> String {
    format!("{app}/{stream}/storyboard")
}

/// Whether `file` is a storyboard file name: `{P}.vtt` or `{P}-{n}.jpg`.
pub fn is_file_name(file: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    match (file.strip_suffix(".vtt"), file.strip_suffix(".jpg")) {
        (Some(p), _) => digits(p),
        (_, Some(sheet)) => sheet.split_once('-').is_some_and(|(p, n)| digits(p) && digits(n)),
        _ => false,
    }
}

/// The storyboards of every stream whose template has one.
pub struct Storyboards {
    storage: Arc<Storage>,
    boards: Mutex<HashMap<(String, String, String), Board>>,
}

/// What a capture tells its storyboard.
pub struct Snapshot<'a> {
    pub domain: &'a str,
    pub app: &'a str,
    pub stream: &'a str,
    pub storage: &'a str,
    pub create_ms: u64,
    pub period_s: u32,
    pub interval_s: u32,
    pub picture: Bytes,
}

impl Storyboards {
    pub fn new(storage: Arc<Storage>) -> Self {
        Storyboards { storage, boards: Mutex::default() }
    }

    /// Adds a stored capture to its stream's storyboard and writes the
    /// changed sheet and the WebVTT.
    pub async fn add(&self, s: Snapshot<'_>) -> Result<(), StoryboardError> {
        let period_ms = u64::from(s.period_s) * 1000;
        let start = s.create_ms - s.create_ms % period_ms;
        let key = (s.domain.to_owned(), s.app.to_owned(), s.stream.to_owned());
        let board = {
            let mut boards = self.boards.lock().unwrap();
            // Boards of periods that ended an hour or more ago are done.
            boards.retain(|_, b| b.period_start_ms + b.period_ms + 3_600_000 > s.create_ms);
            boards.remove(&key).filter(|b| b.period_start_ms == start && b.period_ms == period_ms)
        };
        let target = self.storage.target(s.domain, s.storage)?;
        let dir = folder(s.app, s.stream);
        let p = start / 1000;
        let interval_ms = u64::from(s.interval_s) * 1000;
        let board = match board {
            Some(b) => Some(b),
            None => self.read_back(&target, &dir, start, period_ms, interval_ms).await?,
        };
        if let Some(full) = board.as_ref().filter(|b| b.tiles.len() >= MAX_TILES) {
            tracing::debug!(dir, tiles = full.tiles.len(), "storyboard full");
            // Kept, so the next capture of the period does not read it back again.
            self.boards.lock().unwrap().insert(key, board.expect("checked above"));
            return Err(StoryboardError::Full);
        }
        let picture = s.picture.clone();
        let create = s.create_ms;
        let (board, sheet, jpg, vtt) = tokio::task::spawn_blocking(move || {
            let (rgb, w, h) = crate::thumbs::decode_rgb(&picture)?;
            let mut board = board.unwrap_or_else(|| Board {
                period_start_ms: start,
                period_ms,
                interval_ms,
                tile_h: (((TILE_W * h / w.max(1)).max(2) + 1) & !1).min(MAX_TILE_H),
                tiles: Vec::new(),
                sheet: Vec::new(),
            });
            let sheet = board.add(create, &rgb, w, h);
            let jpg = board.encode_sheet()?;
            let vtt = board.vtt();
            Ok::<_, StoryboardError>((board, sheet, jpg, vtt))
        })
        .await
        .map_err(|e| StoryboardError::Encode(e.to_string()))??;
        self.boards.lock().unwrap().insert(key, board);
        target.put_overwrite(&format!("{dir}/{p}-{sheet}.jpg"), Bytes::from(jpg)).await?;
        target.put_overwrite(&format!("{dir}/{p}.vtt"), Bytes::from(vtt)).await?;
        Ok(())
    }
}

impl Storyboards {
    /// The period's board as its files on `target` say, if it has any.
    async fn read_back(
        &self,
        target: &crate::storage::Target,
        dir: &str,
        start: u64,
        period_ms: u64,
        interval_ms: u64,
    ) -> Result<Option<Board>, StoryboardError> {
        let p = start / 1000;
        let vtt = match target.get(&format!("{dir}/{p}.vtt")).await {
            Ok(v) => v,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let vtt = String::from_utf8_lossy(&vtt).into_owned();
        let last = vtt.lines().rev().find_map(|l| l.split_once("#xywh=")).map(|(sheet, _)| sheet.to_owned());
        let sheet = match &last {
            Some(name) => target.get(&format!("{dir}/{name}")).await?,
            None => Bytes::new(),
        };
        let board = tokio::task::spawn_blocking(move || Board::recover(start, period_ms, interval_ms, &vtt, &sheet))
            .await
            .map_err(|e| StoryboardError::Encode(e.to_string()))?;
        if board.is_none() {
            tracing::warn!(dir, period = p, "storyboard files not as written here: the period starts anew");
        }
        Ok(board)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fill_sheets_and_cues_point_at_them() {
        let mut b = Board {
            period_start_ms: 3_600_000,
            period_ms: 3_600_000,
            interval_ms: 5000,
            tile_h: 90,
            tiles: Vec::new(),
            sheet: Vec::new(),
        };
        let grey = vec![100u8; 320 * 180 * 3];
        for i in 0..27 {
            let sheet = b.add(3_600_000 + i * 5000, &grey, 320, 180);
            assert_eq!(sheet, i as usize / 25);
        }
        let vtt = b.vtt();
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\n3600-0.jpg#xywh=0,0,160,90\n"));
        assert!(vtt.contains("00:02:00.000 --> 00:02:05.000\n3600-0.jpg#xywh=640,360,160,90\n"));
        assert!(vtt.ends_with("00:02:10.000 --> 00:02:15.000\n3600-1.jpg#xywh=160,0,160,90\n\n"));
        assert_eq!(cue_time(3_723_004), "01:02:03.004");
        assert_eq!(parse_cue_time("01:02:03.004"), Some(3_723_004));
        // Read back from what it wrote, it goes on where it was.
        let sheet = b.encode_sheet().unwrap();
        let mut back = Board::recover(3_600_000, 3_600_000, 5000, &vtt, &sheet).unwrap();
        assert_eq!(back.tiles.len(), 27);
        assert_eq!(back.add(3_600_000 + 27 * 5000, &grey, 320, 180), 1);
        assert_eq!(back.vtt(), {
            b.add(3_600_000 + 27 * 5000, &grey, 320, 180);
            b.vtt()
        });
        assert!(Board::recover(3_600_000, 3_600_000, 5000, "WEBVTT\n\n00:00:00.000 --> x\nnope\n", &sheet).is_none());
        assert!(is_file_name("1700000000.vtt") && is_file_name("1700000000-3.jpg"));
        assert!(
            !is_file_name("../x.vtt") && !is_file_name("1-.jpg") && !is_file_name("1.jpg") && !is_file_name("a.vtt")
        );
    }
}
