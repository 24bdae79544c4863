"""Discovery targets (snmp.targets): single addresses, CIDR networks, inclusive ranges; counting and
iteration."""

from __future__ import annotations

import pytest

from snmp.targets import count_addresses, estimated_targets, iter_addresses, parse_target


def test_single_addresses_count_one_and_are_normalised():
    v4 = parse_target("192.168.1.1")
    assert (v4.text, v4.count, v4.version) == ("192.168.1.1", 1, 4)
    v6 = parse_target(" 2001:DB8:0:0::1 ")
    assert (v6.text, v6.count, v6.version) == ("2001:db8::1", 1, 6)


@pytest.mark.parametrize(
    ("text", "count", "first", "last"),
    [
        ("10.0.1.0/24", 256, "10.0.1.0", "10.0.1.255"),
        ("10.0.1.7/32", 1, "10.0.1.7", "10.0.1.7"),
        ("10.0.0.0/16", 65536, "10.0.0.0", "10.0.255.255"),
        ("10.0.0.0/31", 2, "10.0.0.0", "10.0.0.1"),
        ("2001:db8::/120", 256, "2001:db8::", "2001:db8::ff"),
        ("2001:db8::5/128", 1, "2001:db8::5", "2001:db8::5"),
    ],
)
def test_a_cidr_counts_every_address_of_the_network(text, count, first, last):
    target = parse_target(text)
    assert target.count == count
    assert (str(target.first), str(target.last)) == (first, last)
    assert target.text == text


def test_the_spec_example_two_slash_24s_are_512_targets():
    assert count_addresses([parse_target("10.0.1.0/24"), parse_target("10.0.2.0/24")]) == 512


def test_a_cidr_with_host_bits_set_is_refused_naming_the_network():
    with pytest.raises(ValueError, match=r"host bits set; the network is 10\.0\.0\.0/24"):
        parse_target("10.0.0.1/24")
    with pytest.raises(ValueError, match=r"2001:db8::/120"):
        parse_target("2001:db8::1/120")


@pytest.mark.parametrize("text", ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "2001:db8::/129", "10.0.0.0/-1"])
def test_a_bad_prefix_length_is_refused(text):
    with pytest.raises(ValueError):
        parse_target(text)


def test_ranges_are_inclusive():
    target = parse_target("10.0.0.1-10.0.0.20")
    assert (target.text, target.count) == ("10.0.0.1-10.0.0.20", 20)
    assert parse_target("10.0.0.5-10.0.0.5").count == 1
    crossing = parse_target("10.0.0.250-10.0.1.5")
    assert crossing.count == 12
    v6 = parse_target("2001:db8::1-2001:db8::10")
    assert (v6.text, v6.count) == ("2001:db8::1-2001:db8::10", 16)


def test_the_ipv4_last_octet_shorthand_is_normalised_to_the_full_form():
    target = parse_target("10.0.0.1-20")
    assert (target.text, target.count) == ("10.0.0.1-10.0.0.20", 20)
    with pytest.raises(ValueError, match="above 255"):
        parse_target("10.0.0.1-256")
    with pytest.raises(ValueError, match="backwards"):
        parse_target("10.0.0.9-3")


def test_a_backwards_range_is_refused():
    with pytest.raises(ValueError, match=r"runs backwards \(10\.0\.0\.1 comes before 10\.0\.0\.20\)"):
        parse_target("10.0.0.20-10.0.0.1")


def test_a_range_mixing_families_is_refused():
    with pytest.raises(ValueError, match="cannot mix IPv4 and IPv6"):
        parse_target("10.0.0.1-2001:db8::1")
    with pytest.raises(ValueError, match="cannot mix IPv4 and IPv6"):
        parse_target("2001:db8::1-10.0.0.1")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "garbage",
        "10.0.0",
        "10.0.0.256",
        "010.0.0.1",
        "10.0.0.1-",
        "-10.0.0.1",
        "10.0.0.1-10.0.0.2-10.0.0.3",
        "10.0.0.0/24-10.0.1.0/24",
        "fe80::1%eth0",
        "１０.0.0.1",
        "host.example.com",
        "x" * 500,
        None,
        42,
        ["10.0.0.1"],
    ],
)
def test_garbage_is_refused_with_a_message(value):
    with pytest.raises(ValueError) as info:
        parse_target(value)
    assert str(info.value)


def test_iter_addresses_yields_every_address_in_order():
    targets = [
        parse_target("10.0.0.254/31"),
        parse_target("10.0.1.9"),
        parse_target("2001:db8::fe-2001:db8::101"),
    ]
    addresses = list(iter_addresses(targets))
    assert addresses == [
        "10.0.0.254",
        "10.0.0.255",
        "10.0.1.9",
        "2001:db8::fe",
        "2001:db8::ff",
        "2001:db8::100",
        "2001:db8::101",
    ]
    assert len(addresses) == count_addresses(targets)


def test_iter_addresses_is_lazy():
    huge = [parse_target("2001:db8::/64")]
    assert count_addresses(huge) == 2**64
    iterator = iter_addresses(huge)
    assert [next(iterator) for _ in range(2)] == ["2001:db8::", "2001:db8::1"]


def test_duplicates_are_kept_and_counted_as_given():
    targets = [parse_target("10.0.0.1"), parse_target("10.0.0.1"), parse_target("10.0.0.0/31")]
    assert count_addresses(targets) == 4


def test_estimated_targets_counts_stored_targets_and_skips_one_that_no_longer_parses():
    assert estimated_targets(["10.0.1.0/24", "10.0.2.1-10.0.2.10", "192.168.1.1"]) == 256 + 10 + 1
    assert estimated_targets(["10.0.1.0/24", "hand-edited"]) == 256
    assert estimated_targets([]) == 0
