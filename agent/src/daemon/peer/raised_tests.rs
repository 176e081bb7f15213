use super::*;

#[test]
fn findings_are_raised_once_a_period_per_user_and_kind() {
    let r = Raised::default();
    let t = Instant::now();
    assert_eq!(r.should_raise(1000, Kind::Library, t), Some(0));
    assert_eq!(r.should_raise(1000, Kind::Library, t), None);
    assert_eq!(r.should_raise(1000, Kind::LoaderVariable, t), Some(0));
    assert_eq!(r.should_raise(1001, Kind::Library, t), Some(0));
    assert_eq!(
        r.should_raise(1000, Kind::Library, t + EVENT_PERIOD),
        Some(1)
    );
}

/// Review M2: PROXY_TAMPERED was limited per raw uid, so a user's 65,536 sub-uids could
/// raise ~260,000 events an hour, and the map of those raised never shrank. Now the caller
/// keys by owner, MAX_RAISED are raised per period in all (the rest counted into the next
/// one), and the map is bounded.
#[test]
fn tampered_reports_are_capped_over_every_owner() {
    let r = Raised::default();
    let t = Instant::now();
    let raised = (0..10_000u32)
        .filter(|u| r.should_raise(100_000 + u, Kind::Library, t).is_some())
        .count() as u64;
    assert_eq!(raised, MAX_RAISED);
    assert!(r.0.lock().unwrap().by.len() <= MAX_RAISED_KEYS);
    // The next period's first event says how many were held back.
    let next = r.should_raise(1000, Kind::Library, t + EVENT_PERIOD);
    assert_eq!(next, Some(10_000 - MAX_RAISED));
}
