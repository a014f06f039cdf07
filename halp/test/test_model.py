"""Tests for :mod:`halp.model`: the syntax rules of labels, hosts, ports, times."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from halp.error import ErrorCode, ProtocolError
from halp.model import (
    check_host,
    check_label,
    check_port,
    check_timestamp,
    label_ancestors,
    label_parent,
    LabelInfo,
)


class LabelTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for label in [
            "bittorrent",
            "myapp/v2",
            "a",
            "A-b_c.d",
            "x/" * 15 + "y",
            "a" * 64,
            "v1.2",
            "halp",
            "my.labels",
            "a/labels",
        ]:
            self.assertEqual(check_label(label), label)

    def test_invalid(self) -> None:
        for label, why in [
            ("", "empty label"),
            ("a//b", "empty label segment"),
            ("/a", "empty label segment"),
            ("a/", "empty label segment"),
            ("a b", "allowed are"),
            ("a!", "allowed are"),
            ("caf\u00e9", "allowed are"),
            ("a" * 65, "longer than 64"),
            ("/".join(["a"] * 17), "deeper than 16"),
            ("/".join(["abcdefgh"] * 30), "longer than 255"),
            ("..", "dots only"),
            ("a/./b", "dots only"),
            ("labels", "reserved"),
            ("labels/x", "reserved"),
            ("a[1:2]", "allowed are"),
            ("a\x00", "allowed are"),
        ]:
            e = self.assertRaises(ProtocolError, check_label, label)
            self.assertEqual(e.code, ErrorCode.BAD_LABEL)
            self.assertIn(why, e.message, label)

    def test_case_sensitive(self) -> None:
        self.assertEqual(check_label("BitTorrent"), "BitTorrent")

    def test_parent_and_ancestors(self) -> None:
        self.assertEqual(label_parent("a"), "")
        self.assertEqual(label_parent("a/b/c"), "a/b")
        self.assertEqual(label_ancestors("a"), ["a"])
        self.assertEqual(label_ancestors("a/b/c"), ["a/b/c", "a/b", "a"])

    def test_segment(self) -> None:
        self.assertEqual(LabelInfo(1, "a/b/c").segment, "c")
        self.assertEqual(LabelInfo(1, "a").segment, "a")


class HostTests(SynchronousTestCase):
    def test_ipv4(self) -> None:
        self.assertEqual(check_host("198.51.100.7"), "198.51.100.7")
        self.assertEqual(check_host("0.0.0.0"), "0.0.0.0")

    def test_ipv6_canonical(self) -> None:
        self.assertEqual(check_host("2001:DB8:0::1"), "2001:db8::1")
        self.assertEqual(check_host("::ffff:192.0.2.1"), "::ffff:192.0.2.1")
        self.assertEqual(check_host("::FFFF:c000:0201"), "::ffff:192.0.2.1")
        self.assertEqual(check_host("::1"), "::1")

    def test_dns_names(self) -> None:
        self.assertEqual(check_host("Example.COM"), "example.com")
        self.assertEqual(check_host("example.com."), "example.com")
        self.assertEqual(check_host("h"), "h")
        self.assertEqual(check_host("a-b.c0"), "a-b.c0")
        self.assertEqual(check_host("xn--bcher-kva.example"), "xn--bcher-kva.example")
        self.assertEqual(check_host("1host.example"), "1host.example")

    def test_invalid(self) -> None:
        for host in [
            "",
            "999.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.4.",
            "[::1]",
            "fe80::1%eth0",
            "2001:db8::g",
            "1:2:3:4:5:6:7:8:9",
            "a..b",
            "-a.example",
            "a-.example",
            "under_score.example",
            "host.123",
            "a" * 64 + ".example",
            ("a" * 60 + ".") * 5,
            "caf\u00e9.example",
            "a b",
            "*.example",
        ]:
            e = self.assertRaises(ProtocolError, check_host, host)
            self.assertEqual(e.code, ErrorCode.BAD_ENTRY)
            self.assertTrue(e.message.startswith("bad host"), host)


class NumberTests(SynchronousTestCase):
    def test_ports(self) -> None:
        self.assertEqual(check_port("1"), 1)
        self.assertEqual(check_port("65535"), 65535)
        self.assertEqual(check_port("00080"), 80)
        for text in ["0", "65536", "70000", "-1", "+1", "1.0", "", "x", "\u0661", "1_0", "000001"]:
            e = self.assertRaises(ProtocolError, check_port, text)
            self.assertEqual(e.message, "bad port: expected 1-65535")

    def test_timestamps(self) -> None:
        self.assertEqual(check_timestamp("0"), 0)
        self.assertEqual(check_timestamp("1700000000"), 1700000000)
        self.assertEqual(check_timestamp("9" * 12), 10**12 - 1)
        for text in ["-5", "1.5", "abc", "", "1e9", "9" * 13, "\u0661\u0662", "1_000", " 1"]:
            e = self.assertRaises(ProtocolError, check_timestamp, text)
            self.assertIn("bad timestamp", e.message)
