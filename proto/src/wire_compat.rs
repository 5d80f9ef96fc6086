//! Wire-compatibility checks against containerd's snapshots.v1 schema.
//!
//! The expected bytes are built here by hand from the field numbers and wire types of
//! containerd's schema (checked in containerd v1.6.0, v1.7.0, v2.0.0 and main), not with the
//! generated code, so a wrong number or type in our `.proto` files fails a test. Each test
//! decodes bytes as containerd would send them and, where the encoding is unique, checks that
//! our encoding is byte-identical.

use std::collections::HashMap;

use prost::Message;

use crate::snapshots::v1::{
    CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest, ListSnapshotsResponse,
    PrepareSnapshotRequest, PrepareSnapshotResponse, StatSnapshotResponse, UpdateSnapshotRequest,
    UsageResponse,
};
use crate::types::Mount;

/// A protobuf message written field by field, with explicit field numbers.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    const VARINT: u64 = 0;
    const LEN: u64 = 2;

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn varint(mut self, field: u64, v: u64) -> Self {
        self.raw_varint((field << 3) | Self::VARINT);
        self.raw_varint(v);
        self
    }

    fn bytes(mut self, field: u64, data: &[u8]) -> Self {
        self.raw_varint((field << 3) | Self::LEN);
        self.raw_varint(data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }

    fn string(self, field: u64, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }

    fn message(self, field: u64, m: Wire) -> Self {
        self.bytes(field, &m.0)
    }

    /// A `map<string, string>` entry: an embedded message with key 1, value 2.
    fn map_entry(self, field: u64, key: &str, value: &str) -> Self {
        self.message(field, Wire::default().string(1, key).string(2, value))
    }

    /// A `google.protobuf.Timestamp`: seconds 1 (int64), nanos 2 (int32).
    fn timestamp(self, field: u64, seconds: u64, nanos: u64) -> Self {
        self.message(field, Wire::default().varint(1, seconds).varint(2, nanos))
    }
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn wire_encoder_matches_literal_bytes() {
    // Guards the hand encoder itself: field 1 "ab", field 3 varint 300, field 4 "".
    let got = Wire::default()
        .string(1, "ab")
        .varint(3, 300)
        .string(4, "")
        .0;
    assert_eq!(got, [0x0a, 0x02, b'a', b'b', 0x18, 0xac, 0x02, 0x22, 0x00]);
}

#[test]
fn mount_fields_are_type_1_source_2_target_3_options_4() {
    let mut bytes = vec![0x0a, 0x07];
    bytes.extend_from_slice(b"overlay");
    bytes.extend_from_slice(&[0x12, 0x07]);
    bytes.extend_from_slice(b"overlay");
    bytes.extend_from_slice(&[0x1a, 0x07]);
    bytes.extend_from_slice(b"/rootfs");
    bytes.extend_from_slice(&[0x22, 0x02]);
    bytes.extend_from_slice(b"ro");
    bytes.extend_from_slice(&[0x22, 0x0b]);
    bytes.extend_from_slice(b"lowerdir=/a");

    let m = Mount::decode(bytes.as_slice()).expect("decode Mount");
    assert_eq!(m.r#type, "overlay");
    assert_eq!(m.source, "overlay");
    assert_eq!(m.target, "/rootfs");
    assert_eq!(m.options, ["ro", "lowerdir=/a"]);
    assert_eq!(m.encode_to_vec(), bytes);
}

#[test]
fn prepare_request_as_containerd_sends_it() {
    let bytes = Wire::default()
        .string(1, "strata")
        .string(2, "k")
        .string(3, "p")
        .map_entry(4, "a", "b")
        .0;
    let req = PrepareSnapshotRequest::decode(bytes.as_slice()).expect("decode Prepare");
    assert_eq!(req.snapshotter, "strata");
    assert_eq!(req.key, "k");
    assert_eq!(req.parent, "p");
    assert_eq!(req.labels, labels(&[("a", "b")]));
    assert_eq!(req.encode_to_vec(), bytes);
}

#[test]
fn prepare_response_carries_mounts_in_field_1() {
    let mount = Wire::default()
        .string(1, "bind")
        .string(2, "/var/lib/strata/snapshots/1/fs")
        .string(4, "rbind")
        .string(4, "rw");
    let bytes = Wire::default().message(1, mount).0;
    let resp = PrepareSnapshotResponse::decode(bytes.as_slice()).expect("decode Prepare response");
    assert_eq!(
        resp.mounts,
        [Mount {
            r#type: "bind".into(),
            source: "/var/lib/strata/snapshots/1/fs".into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }]
    );
    assert_eq!(resp.encode_to_vec(), bytes);
}

#[test]
fn commit_request_parent_is_field_5() {
    let bytes = Wire::default()
        .string(1, "strata")
        .string(2, "sha256:committed")
        .string(3, "extract-1 sha256:committed")
        .map_entry(4, "containerd.io/snapshot.ref", "sha256:committed")
        .string(5, "sha256:parent")
        .0;
    let req = CommitSnapshotRequest::decode(bytes.as_slice()).expect("decode Commit");
    assert_eq!(req.snapshotter, "strata");
    assert_eq!(req.name, "sha256:committed");
    assert_eq!(req.key, "extract-1 sha256:committed");
    assert_eq!(
        req.labels,
        labels(&[("containerd.io/snapshot.ref", "sha256:committed")])
    );
    assert_eq!(req.parent, "sha256:parent");
    assert_eq!(req.encode_to_vec(), bytes);
}

#[test]
fn commit_request_from_containerd_before_2_2_has_no_parent() {
    let bytes = Wire::default()
        .string(1, "strata")
        .string(2, "name")
        .string(3, "key")
        .0;
    let req = CommitSnapshotRequest::decode(bytes.as_slice()).expect("decode Commit");
    assert_eq!((req.name.as_str(), req.key.as_str()), ("name", "key"));
    assert!(req.parent.is_empty());
}

fn committed_info_wire() -> Wire {
    Wire::default()
        .string(1, "sha256:layer")
        .string(2, "sha256:base")
        .varint(3, 3)
        .timestamp(4, 1_700_000_000, 123_456_789)
        .timestamp(5, 1_700_000_060, 1)
        .map_entry(6, "containerd.io/snapshot.ref", "sha256:layer")
}

fn check_committed_info(info: &Info) {
    assert_eq!(info.name, "sha256:layer");
    assert_eq!(info.parent, "sha256:base");
    assert_eq!(info.kind, 3);
    assert_eq!(info.kind(), Kind::Committed);
    let created = info.created_at.expect("created_at set");
    assert_eq!(
        (created.seconds, created.nanos),
        (1_700_000_000, 123_456_789)
    );
    let updated = info.updated_at.expect("updated_at set");
    assert_eq!((updated.seconds, updated.nanos), (1_700_000_060, 1));
    assert_eq!(
        info.labels,
        labels(&[("containerd.io/snapshot.ref", "sha256:layer")])
    );
}

#[test]
fn info_with_timestamps_and_committed_kind() {
    let bytes = committed_info_wire().0;
    let info = Info::decode(bytes.as_slice()).expect("decode Info");
    check_committed_info(&info);
    assert_eq!(info.encode_to_vec(), bytes);
}

#[test]
fn kind_numbers_match_containerd() {
    assert_eq!(Kind::Unknown as i32, 0);
    assert_eq!(Kind::View as i32, 1);
    assert_eq!(Kind::Active as i32, 2);
    assert_eq!(Kind::Committed as i32, 3);
    assert_eq!(Kind::Committed.as_str_name(), "COMMITTED");
}

#[test]
fn stat_response_wraps_info_in_field_1() {
    let bytes = Wire::default().message(1, committed_info_wire()).0;
    let resp = StatSnapshotResponse::decode(bytes.as_slice()).expect("decode Stat response");
    check_committed_info(resp.info.as_ref().expect("info set"));
    assert_eq!(resp.encode_to_vec(), bytes);
}

#[test]
fn list_request_filters_are_field_2_and_response_info_field_1() {
    let bytes = Wire::default()
        .string(1, "strata")
        .string(2, "kind==committed")
        .string(2, "parent==sha256:base")
        .0;
    let req = ListSnapshotsRequest::decode(bytes.as_slice()).expect("decode List");
    assert_eq!(req.snapshotter, "strata");
    assert_eq!(req.filters, ["kind==committed", "parent==sha256:base"]);
    assert_eq!(req.encode_to_vec(), bytes);

    let active = Wire::default().string(1, "active-1").varint(3, 2);
    let bytes = Wire::default()
        .message(1, committed_info_wire())
        .message(1, active)
        .0;
    let resp = ListSnapshotsResponse::decode(bytes.as_slice()).expect("decode List response");
    assert_eq!(resp.info.len(), 2);
    check_committed_info(&resp.info[0]);
    assert_eq!(resp.info[1].name, "active-1");
    assert_eq!(resp.info[1].kind(), Kind::Active);
    assert_eq!(resp.encode_to_vec(), bytes);
}

#[test]
fn update_request_info_field_2_mask_field_3() {
    let info = Wire::default()
        .string(1, "sha256:layer")
        .map_entry(6, "gc", "keep");
    let mask = Wire::default().string(1, "labels.gc");
    let bytes = Wire::default()
        .string(1, "strata")
        .message(2, info)
        .message(3, mask)
        .0;
    let req = UpdateSnapshotRequest::decode(bytes.as_slice()).expect("decode Update");
    assert_eq!(req.snapshotter, "strata");
    let info = req.info.as_ref().expect("info set");
    assert_eq!(info.name, "sha256:layer");
    assert_eq!(info.labels, labels(&[("gc", "keep")]));
    assert_eq!(
        req.update_mask.as_ref().expect("mask set").paths,
        ["labels.gc"]
    );
    assert_eq!(req.encode_to_vec(), bytes);
}

#[test]
fn usage_response_sizes_are_int64() {
    // Above 2^32, so an int32 field would not round-trip.
    let bytes = Wire::default().varint(1, 5_000_000_000).varint(2, 70_000).0;
    let resp = UsageResponse::decode(bytes.as_slice()).expect("decode Usage response");
    assert_eq!(resp.size, 5_000_000_000);
    assert_eq!(resp.inodes, 70_000);
    assert_eq!(resp.encode_to_vec(), bytes);
}

#[test]
fn fields_from_newer_containerd_are_skipped() {
    // A field number this schema does not declare must not fail the decode.
    let bytes = Wire::default()
        .string(1, "strata")
        .string(2, "k")
        .string(15, "future")
        .varint(16, 7)
        .0;
    let req = PrepareSnapshotRequest::decode(bytes.as_slice()).expect("decode Prepare");
    assert_eq!(
        (req.snapshotter.as_str(), req.key.as_str()),
        ("strata", "k")
    );
}
