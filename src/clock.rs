//! Wall-clock timestamps as every output writes them: RFC 3339 in UTC, to the millisecond.

use std::time::SystemTime;

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
