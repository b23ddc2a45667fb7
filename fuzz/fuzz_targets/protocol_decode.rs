//! The helper's socket decoder must refuse anything malformed without panicking, and what
//! it accepts must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pg_backup_hooks::protocol::{self, Reply, Request, StartEvent};

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::BufReader::new(data);
    while let Ok(Some(line)) = protocol::read_line(&mut reader) {
        if let Ok(req) = protocol::decode::<Request>(&line) {
            let mut buf = Vec::new();
            protocol::write_msg(&mut buf, &req).expect("encode");
            let text = String::from_utf8(buf).expect("utf8");
            let again: Request = protocol::decode(text.trim_end()).expect("re-decode");
            assert_eq!(again, req);
        }
        let _ = protocol::decode::<Reply>(&line);
        let _ = protocol::decode::<StartEvent>(&line);
    }
});
