//! Every byte either side of the proxy sends goes through framing, then classification, then
//! (for tools/call) parameter extraction. None of it may panic, hang or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thoth_proxy::framing::{Frame, read_frame};
use thoth_proxy::message::{Message, classify, tool_call_params};

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::BufReader::with_capacity(7, data);
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        match read_frame(&mut reader, &mut buf, 4096) {
            Ok(Frame::Line) => {
                assert!(buf.len() <= 4097);
                total += buf.len();
                if let Ok(Message::Request { method, params, .. }) = classify(&buf) {
                    if method == "tools/call" {
                        if let Ok(call) = tool_call_params(params) {
                            assert!(!call.name.is_empty());
                            let arguments = call.arguments_value();
                            assert!(arguments.is_object() || arguments.is_null());
                        }
                    }
                }
            }
            Ok(Frame::TooLong(n)) => {
                assert!(n > 4096);
                total += n;
            }
            Ok(Frame::Eof) => break,
            Err(_) => break,
        }
    }
    assert!(total <= data.len());
});
