//! A `multipart/byteranges` answer: the first line is the Content-Type (its boundary), the
//! rest the body. Parts must be found or refused, never panic; every part's length must
//! match its stated range.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(content_type) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or_default();
    if let Some(Ok((parts, _complete))) = strata::fuzzing::multipart_byteranges(content_type, body)
    {
        for (range, len) in parts {
            assert_eq!(range.end - range.start, len as u64, "part {range:?}");
        }
    }
});
