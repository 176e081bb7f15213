use super::*;

#[test]
fn ipv6_addresses_count_by_64_and_ipv4_by_address() {
    let counts = Arc::new(PerAddress::default());
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    let _one = counts.take(a, 1).expect("first of its /64");
    assert!(counts.take(b, 1).is_none(), "same /64, other address");
    assert!(counts.take(other, 1).is_some(), "another /64");
    let v4: IpAddr = "192.0.2.1".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    let _v4 = counts.take(v4, 1).unwrap();
    assert!(counts.take(mapped, 1).is_none(), "IPv4-mapped is its IPv4");
    assert!(counts.take("192.0.2.2".parse().unwrap(), 1).is_some());
}
