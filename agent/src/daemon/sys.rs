//! Small helpers of the daemon that name nothing of it: a gRPC status as text, an OS user's
//! login name.

// libc for getpwuid_r (a caller's user name): rustix has no passwd lookup.
#![allow(unsafe_code)]

pub(crate) fn describe(s: &tonic::Status) -> String {
    let mut m = s.message().to_owned();
    if m.is_empty() {
        m = format!("{:?}", s.code());
    }
    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        && let Some(src) = std::error::Error::source(s)
    {
        m.push_str(&format!(": {src}"));
        let mut cur = src.source();
        while let Some(c) = cur {
            m.push_str(&format!(": {c}"));
            cur = c.source();
        }
    }
    m
}

/// The login name of `uid`, from its passwd entry.
#[cfg(unix)]
pub fn login_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into the buffers we own, sized as given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}
