//! The stored forms of the index's values, private to it: records and
//! intents and tombstones (postcard), callbacks (JSON). The public types
//! (`Record`, `Intent`, `Tombstone`, `Delivery`) carry no serde, so no other
//! module's format is tied to these bytes. Field order is the format:
//! postcard writes fields in declaration order, without names.

use serde::{Deserialize, Serialize};

use super::{Delivery, FleetEvent, IndexError, Intent, Planned, Record, RecordId, Tombstone};

/// The stored form of a record (private to the index).
#[derive(Serialize, Deserialize)]
struct Row<'a> {
    domain: &'a str,
    app: &'a str,
    stream: &'a str,
    create_timestamp_ms: u64,
    key: &'a str,
    storage: &'a str,
    endpoint: &'a str,
    bucket: &'a str,
    size: u64,
    width: u32,
    height: u32,
    is_overlay: bool,
    sequence: u64,
    /// Added in the fleet: rows written before it end at `sequence`.
    node: &'a str,
}

/// A row as written before records carried their node.
#[derive(Deserialize)]
struct RowBeforeFleet<'a> {
    domain: &'a str,
    app: &'a str,
    stream: &'a str,
    create_timestamp_ms: u64,
    key: &'a str,
    storage: &'a str,
    endpoint: &'a str,
    bucket: &'a str,
    size: u64,
    width: u32,
    height: u32,
    is_overlay: bool,
    sequence: u64,
}

pub(crate) fn encode_record(r: &Record) -> Vec<u8> {
    postcard::to_stdvec(&Row {
        domain: &r.domain,
        app: &r.app,
        stream: &r.stream,
        create_timestamp_ms: r.create_timestamp_ms,
        key: &r.key,
        storage: &r.storage,
        endpoint: &r.endpoint,
        bucket: &r.bucket,
        size: r.size,
        width: r.width,
        height: r.height,
        is_overlay: r.is_overlay,
        sequence: r.sequence,
        node: &r.node,
    })
    .expect("encoding a record cannot fail")
}

pub(crate) fn decode_record(id: u128, bytes: &[u8]) -> Result<Record, IndexError> {
    let row: Row<'_> = match postcard::from_bytes(bytes) {
        Ok(row) => row,
        Err(e) => {
            let Ok(r) = postcard::from_bytes::<RowBeforeFleet<'_>>(bytes) else {
                return Err(IndexError::Corrupt(format!("record {id:032x}: {e}")));
            };
            Row {
                domain: r.domain,
                app: r.app,
                stream: r.stream,
                create_timestamp_ms: r.create_timestamp_ms,
                key: r.key,
                storage: r.storage,
                endpoint: r.endpoint,
                bucket: r.bucket,
                size: r.size,
                width: r.width,
                height: r.height,
                is_overlay: r.is_overlay,
                sequence: r.sequence,
                node: "",
            }
        }
    };
    Ok(Record {
        id: RecordId(id),
        domain: row.domain.into(),
        app: row.app.into(),
        stream: row.stream.into(),
        create_timestamp_ms: row.create_timestamp_ms,
        key: row.key.into(),
        storage: row.storage.into(),
        endpoint: row.endpoint.into(),
        bucket: row.bucket.into(),
        size: row.size,
        width: row.width,
        height: row.height,
        is_overlay: row.is_overlay,
        sequence: row.sequence,
        node: row.node.into(),
    })
}

#[derive(Serialize, Deserialize)]
struct IntentRow<'a> {
    domain: &'a str,
    app: &'a str,
    stream: &'a str,
    create_timestamp_ms: u64,
    sequence: u64,
    storage: &'a str,
    placements: Vec<PlannedRow<'a>>,
    size: u64,
    md5: [u8; 16],
    width: u32,
    height: u32,
}

#[derive(Serialize, Deserialize)]
struct PlannedRow<'a> {
    key: &'a str,
    overwrite: bool,
}

pub(super) fn encode_intent(i: &Intent) -> Vec<u8> {
    postcard::to_stdvec(&IntentRow {
        domain: &i.domain,
        app: &i.app,
        stream: &i.stream,
        create_timestamp_ms: i.create_timestamp_ms,
        sequence: i.sequence,
        storage: &i.storage,
        placements: i.placements.iter().map(|p| PlannedRow { key: &p.key, overwrite: p.overwrite }).collect(),
        size: i.size,
        md5: i.md5,
        width: i.width,
        height: i.height,
    })
    .expect("encoding an intent cannot fail")
}

pub(super) fn decode_intent(bytes: &[u8]) -> Result<Intent, IndexError> {
    let r: IntentRow<'_> = postcard::from_bytes(bytes).map_err(|e| IndexError::Corrupt(format!("intent: {e}")))?;
    Ok(Intent {
        domain: r.domain.into(),
        app: r.app.into(),
        stream: r.stream.into(),
        create_timestamp_ms: r.create_timestamp_ms,
        sequence: r.sequence,
        storage: r.storage.into(),
        placements: r.placements.into_iter().map(|p| Planned { key: p.key.into(), overwrite: p.overwrite }).collect(),
        size: r.size,
        md5: r.md5,
        width: r.width,
        height: r.height,
    })
}

/// Layout 3's intent, converted when opening a layout-3 index.
#[derive(Deserialize)]
pub(super) struct IntentV3 {
    pub(super) domain: String,
    pub(super) app: String,
    pub(super) stream: String,
    pub(super) create_timestamp_ms: u64,
    pub(super) sequence: u64,
    pub(super) storage: String,
}

pub(super) fn decode_intent_v3(bytes: &[u8]) -> Result<IntentV3, IndexError> {
    postcard::from_bytes(bytes).map_err(|e| IndexError::Corrupt(format!("layout-3 intent: {e}")))
}

#[derive(Serialize, Deserialize)]
struct TombstoneRow<'a> {
    domain: &'a str,
    storage: &'a str,
    key: &'a str,
}

pub(super) fn encode_tombstone(t: &Tombstone) -> Vec<u8> {
    postcard::to_stdvec(&TombstoneRow { domain: &t.domain, storage: &t.storage, key: &t.key })
        .expect("encoding a tombstone cannot fail")
}

pub(super) fn decode_tombstone(bytes: &[u8]) -> Result<Tombstone, IndexError> {
    let r: TombstoneRow<'_> =
        postcard::from_bytes(bytes).map_err(|e| IndexError::Corrupt(format!("tombstone: {e}")))?;
    Ok(Tombstone { domain: r.domain.into(), storage: r.storage.into(), key: r.key.into() })
}

/// A callback in the outbox (JSON, so an operator can read it with redb tools).
#[derive(Serialize, Deserialize)]
struct DeliveryRow {
    domain: String,
    url: String,
    event: String,
    record_id: String,
    body: String,
    created_ms: u64,
    attempts: u32,
    last_error: Option<String>,
}

pub(crate) fn encode_delivery(d: &Delivery) -> Vec<u8> {
    let row = DeliveryRow {
        domain: d.domain.clone(),
        url: d.url.clone(),
        event: d.event.clone(),
        record_id: d.record_id.clone(),
        body: d.body.clone(),
        created_ms: d.created_ms,
        attempts: d.attempts,
        last_error: d.last_error.clone(),
    };
    serde_json::to_vec(&row).expect("encoding a delivery cannot fail")
}

pub(crate) fn decode_delivery(bytes: &[u8]) -> Result<Delivery, IndexError> {
    let r: DeliveryRow =
        serde_json::from_slice(bytes).map_err(|e| IndexError::Corrupt(format!("outbox entry: {e}")))?;
    Ok(Delivery {
        domain: r.domain,
        url: r.url,
        event: r.event,
        record_id: r.record_id,
        body: r.body,
        created_ms: r.created_ms,
        attempts: r.attempts,
        last_error: r.last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes are those the public types wrote when they carried serde
    /// themselves (layout 4): an index written before reads the same.
    #[test]
    fn the_stored_forms_are_unchanged() {
        #[derive(Serialize)]
        struct OldPlanned(String, bool);
        #[derive(Serialize)]
        struct OldIntent(String, String, String, u64, u64, String, Vec<OldPlanned>, u64, [u8; 16], u32, u32);
        let intent = Intent {
            domain: "d".into(),
            app: "live".into(),
            stream: "cam1".into(),
            create_timestamp_ms: 1_700_000_000_000,
            sequence: 7,
            storage: "main".into(),
            placements: vec![
                Planned { key: "a.jpg".into(), overwrite: true },
                Planned { key: "b".into(), overwrite: false },
            ],
            size: 60_000,
            md5: [9; 16],
            width: 1280,
            height: 720,
        };
        let old = OldIntent(
            "d".into(),
            "live".into(),
            "cam1".into(),
            1_700_000_000_000,
            7,
            "main".into(),
            vec![OldPlanned("a.jpg".into(), true), OldPlanned("b".into(), false)],
            60_000,
            [9; 16],
            1280,
            720,
        );
        assert_eq!(encode_intent(&intent), postcard::to_stdvec(&old).unwrap());
        assert_eq!(decode_intent(&encode_intent(&intent)).unwrap(), intent);

        let t = Tombstone { domain: "d".into(), storage: "main".into(), key: "k.jpg".into() };
        assert_eq!(encode_tombstone(&t), postcard::to_stdvec(&("d", "main", "k.jpg")).unwrap());
        assert_eq!(decode_tombstone(&encode_tombstone(&t)).unwrap(), t);

        let d = Delivery {
            domain: "d".into(),
            url: "https://x/cb".into(),
            event: "live_snapshot".into(),
            record_id: "0f".into(),
            body: "{}".into(),
            created_ms: 5,
            attempts: 1,
            last_error: Some("answered 500".into()),
        };
        let json = r#"{"domain":"d","url":"https://x/cb","event":"live_snapshot","record_id":"0f","body":"{}","created_ms":5,"attempts":1,"last_error":"answered 500"}"#;
        assert_eq!(String::from_utf8(encode_delivery(&d)).unwrap(), json);
        assert_eq!(decode_delivery(json.as_bytes()).unwrap(), d);
    }
}

/// A fleet event as the record stream carries it (JSON, `v` 1): what a
/// record holds, its id in hex, and `op` `stored` or `deleted`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetEventJson {
    v: u32,
    op: String,
    id: String,
    domain: String,
    app: String,
    stream: String,
    create_timestamp: u64,
    object: String,
    storage: String,
    endpoint: String,
    bucket: String,
    size: u64,
    width: u32,
    height: u32,
    is_overlay: bool,
    sequence: u64,
    node: String,
}

pub fn encode_fleet_event(e: &FleetEvent) -> Vec<u8> {
    let (op, r) = match e {
        FleetEvent::Stored(r) => ("stored", r),
        FleetEvent::Deleted(r) => ("deleted", r),
    };
    serde_json::to_vec(&FleetEventJson {
        v: 1,
        op: op.into(),
        id: r.id.to_string(),
        domain: r.domain.clone(),
        app: r.app.clone(),
        stream: r.stream.clone(),
        create_timestamp: r.create_timestamp_ms,
        object: r.key.clone(),
        storage: r.storage.clone(),
        endpoint: r.endpoint.clone(),
        bucket: r.bucket.clone(),
        size: r.size,
        width: r.width,
        height: r.height,
        is_overlay: r.is_overlay,
        sequence: r.sequence,
        node: r.node.clone(),
    })
    .expect("a fleet event serializes")
}

pub fn decode_fleet_event(bytes: &[u8]) -> Result<FleetEvent, IndexError> {
    let e: FleetEventJson =
        serde_json::from_slice(bytes).map_err(|e| IndexError::Corrupt(format!("fleet event: {e}")))?;
    let id = RecordId::parse(&e.id).ok_or_else(|| IndexError::Corrupt(format!("fleet event: id {:?}", e.id)))?;
    if e.v != 1 {
        return Err(IndexError::Corrupt(format!("fleet event: version {} (this build reads 1)", e.v)));
    }
    let r = Record {
        id,
        domain: e.domain,
        app: e.app,
        stream: e.stream,
        create_timestamp_ms: e.create_timestamp,
        key: e.object,
        storage: e.storage,
        endpoint: e.endpoint,
        bucket: e.bucket,
        size: e.size,
        width: e.width,
        height: e.height,
        is_overlay: e.is_overlay,
        sequence: e.sequence,
        node: e.node,
    };
    match e.op.as_str() {
        "stored" => Ok(FleetEvent::Stored(r)),
        "deleted" => Ok(FleetEvent::Deleted(r)),
        other => Err(IndexError::Corrupt(format!("fleet event: op {other:?}"))),
    }
}
