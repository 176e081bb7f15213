//! Tests of the event writer's ids.

use super::*;

#[test]
fn event_ids_are_unique_ordered_uuid_v7() {
    let mut ids = EventIds::new();
    let at = SystemTime::now();
    let a: Vec<String> = (0..1000).map(|_| ids.next(at)).collect();
    let mut sorted = a.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), a.len());
    let u = uuid::Uuid::parse_str(&a[0]).unwrap();
    assert_eq!(u.get_version_num(), 7);
}

/// Finding 13.2: ids were a seed plus a counter, so one id gave away every later one. Now
/// the random part of consecutive ids (same millisecond) shares nothing predictable.
#[test]
fn event_ids_cannot_be_derived_from_earlier_ones() {
    let mut ids = EventIds::new();
    let at = SystemTime::now();
    let rand_part = |s: &str| {
        let b = *uuid::Uuid::parse_str(s).unwrap().as_bytes();
        u64::from_be_bytes(b[8..16].try_into().unwrap()) & 0x3fff_ffff_ffff_ffff
    };
    let a: Vec<u64> = (0..64).map(|_| rand_part(&ids.next(at))).collect();
    // With seed + counter, the next id is the previous one plus one.
    let successors = a
        .windows(2)
        .filter(|w| w[1] == w[0].wrapping_add(1))
        .count();
    assert_eq!(successors, 0, "ids follow each other: {a:x?}");
    // And another session's ids share nothing with these.
    let mut other = EventIds::new();
    let b: Vec<u64> = (0..64).map(|_| rand_part(&other.next(at))).collect();
    assert!(a.iter().all(|x| !b.contains(x)));
    // Bits differ all over, not just in the low ones.
    let differing = (a[0] ^ a[1]).count_ones();
    assert!(differing > 8, "{:x} vs {:x}", a[0], a[1]);
}
