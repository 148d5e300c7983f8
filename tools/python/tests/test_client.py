"""Unit tests of the Python client without a daemon (python -m unittest discover tools/python/tests).

Sockets are loopback ZeroMQ sockets in this process; session files are written here with h5py in
each layout the reader accepts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import unittest

import numpy as np
import zmq

import beamwatch_client as bw


def free_endpoint() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://127.0.0.1:{port}"


class WireTest(unittest.TestCase):
    def test_dtype_rule(self) -> None:
        for dt, name in [(np.uint8, "u8"), (np.uint16, "u16"), (">u2", "u16"), (np.uint32, "u32"),
                         (np.float32, "f32"), (">f4", "f32"), (bool, "u8"), (np.int8, "f32"), (np.int16, "f32"),
                         (np.int32, "f32"), (np.int64, "f32"), (np.uint64, "f32"), (np.float16, "f32"),
                         (np.float64, "f32"), ("u16", "u16"), ("float32", "f32")]:
            self.assertEqual(bw.wire_dtype(dt), name, dt)
        for bad in (np.complex64, "U4", object):
            with self.assertRaises(TypeError):
                bw.wire_dtype(bad)

    def test_to_wire_array(self) -> None:
        a = np.arange(12, dtype=">u2").reshape(3, 4)
        out, name, copied = bw.to_wire_array(a)
        self.assertEqual((name, out.dtype.str, copied), ("u16", "<u2", True))
        np.testing.assert_array_equal(out, a)
        b = np.arange(12, dtype=np.uint16).reshape(3, 4)
        out, _, copied = bw.to_wire_array(b)
        self.assertFalse(copied)
        out, name, _ = bw.to_wire_array(b.T)  # not C-contiguous
        self.assertTrue(out.flags.c_contiguous)
        np.testing.assert_array_equal(out, b.T)
        out, name, _ = bw.to_wire_array(np.array([[-3, 7]], dtype=np.int32))
        self.assertEqual(name, "f32")
        np.testing.assert_array_equal(out, [[-3.0, 7.0]])
        for bad in (np.zeros(4), np.zeros((2, 2, 2)), np.zeros((0, 3)), np.array([[np.nan, 1.0]]),
                    np.array([[1e300]])):
            with self.assertRaises(ValueError):
                bw.to_wire_array(bad)

    def test_messages_match_the_wire_format(self) -> None:
        [start] = bw.encode_series_start("s1", frames=3, shape=(2, 3), dtype=np.uint16, frame_time_s=0.5,
                                         beam_current_pa=40.0, dwell_time_us=2.0, pixel_size_a=0.5)
        self.assertEqual(json.loads(start), {
            "htype": "beamwatch/series-start/1", "series": "s1", "frames": 3, "shape": [2, 3], "dtype": "u16",
            "frame_time_s": 0.5, "dose": {"beam_current_pa": 40.0, "dwell_time_us": 2.0, "pixel_size_a": 0.5}})
        px, _, _ = bw.to_wire_array(np.arange(1, 7, dtype=np.uint16).reshape(2, 3))
        head, body = bw.encode_frame(px, 12, 4, timestamp_ns=7, beam_current_pa=19.2)
        self.assertEqual(json.loads(head), {
            "htype": "beamwatch/frame/1", "series": 12, "frame": 4, "shape": [2, 3], "dtype": "u16",
            "byte_order": "<", "timestamp_ns": 7, "dose": {"beam_current_pa": 19.2}})
        self.assertEqual(bytes(body), np.arange(1, 7, dtype="<u2").tobytes())
        self.assertEqual(json.loads(bw.encode_series_end("s1")[0]), {"htype": "beamwatch/series-end/1", "series": "s1"})
        with self.assertRaises(ValueError):
            bw.encode_series_start("s", beam_current_pa=-1)
        with self.assertRaises(TypeError):
            bw.encode_frame(px, "s", 0, probe_size_a=1.0)
        with self.assertRaises(ValueError):
            bw.encode_series_start("")
        with self.assertRaises(TypeError):
            bw.encode_series_start(1.5)

    def test_dose(self) -> None:
        # 40 pA × 2 µs = 499.3 electrons per pixel; over (0.5 Å)² that is 1997.3 e⁻/Å².
        self.assertAlmostEqual(bw.dose_per_frame_e_per_a2(40.0, 2.0, 0.5), 1997.28, places=2)

    def test_sender_over_a_socket(self) -> None:
        ep = free_endpoint()
        ctx = zmq.Context.instance()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        try:
            with bw.Sender(ep, bind=True, send_timeout_s=5) as tx:
                pull.connect(ep)
                self.assertTrue(tx.wait_for_receiver(5))
                tx.start_series("a/b", dwell_time_us=2.0, pixel_size_a=0.5)
                buf = np.zeros((4, 5), dtype=np.uint16)
                for i in range(3):
                    buf[:] = i  # an acquisition loop reusing its buffer
                    self.assertEqual(tx.send_frame(buf, beam_current_pa=10.0 + i), i)
                with self.assertRaises(ValueError):
                    tx.send_frame(np.zeros((5, 4), dtype=np.uint16))
                tx.send_frame(np.ones((4, 5)), series="other", index=9)
                tx.end_series()
                self.assertEqual(tx.frames_sent, 4)
            msgs = [pull.recv_multipart() for _ in range(6)]
        finally:
            pull.close(linger=0)
        heads = [json.loads(m[0]) for m in msgs]
        self.assertEqual([h["htype"] for h in heads], ["beamwatch/series-start/1"] + ["beamwatch/frame/1"] * 4
                         + ["beamwatch/series-end/1"])
        self.assertEqual([h.get("frame") for h in heads[1:4]], [0, 1, 2])
        for i, m in enumerate(msgs[1:4]):
            self.assertEqual(len(m), 2)
            np.testing.assert_array_equal(np.frombuffer(m[1], "<u2").reshape(4, 5), np.full((4, 5), i))
            self.assertEqual(heads[1 + i]["dose"], {"beam_current_pa": 10.0 + i})
        self.assertEqual((heads[4]["series"], heads[4]["frame"], heads[4]["dtype"]), ("other", 9, "f32"))
        self.assertEqual(heads[5]["series"], "a/b")

    def test_send_without_a_daemon_times_out_clearly(self) -> None:
        with bw.Sender(free_endpoint(), send_timeout_s=0.2) as tx:
            with self.assertRaises(bw.BeamwatchTimeout) as e:
                tx.start_series("s")
            self.assertIn("beamwatch run", str(e.exception))
            with self.assertRaises(ValueError):
                tx.send_frame(np.zeros((2, 2), np.uint8))  # no series started


class SubscriberTest(unittest.TestCase):
    def test_topics_alarms_and_bad_messages(self) -> None:
        ep = free_endpoint()
        ctx = zmq.Context.instance()
        pub = ctx.socket(zmq.PUB)
        pub.bind(ep)
        try:
            with bw.Subscriber(ep, topics=(bw.ALARM_TOPIC, bw.SUMMARY_TOPIC)) as sub:
                with self.assertRaises(bw.BeamwatchTimeout):
                    sub.recv(0.3)  # also lets the subscription arrive
                alarm = {"type": "alarm", "rule": "damage-onset", "level": "warning", "frame": 8}
                pub.send_multipart([b"beamwatch.frame", b"{}"])  # not subscribed
                pub.send_multipart([b"beamwatch.alarm", json.dumps(alarm).encode()])
                pub.send_multipart([b"beamwatch.summary", b'{"frames_received": 3}'])
                pub.send_multipart([b"beamwatch.alarm", json.dumps(dict(alarm, level="critical", rule="x")).encode()])
                pub.send_multipart([b"beamwatch.alarm", b"not json"])
                self.assertEqual(sub.recv(2), ("beamwatch.alarm", alarm))
                self.assertEqual(sub.recv(2), ("beamwatch.summary", {"frames_received": 3}))
                self.assertEqual(next(sub.alarms(levels="critical"))["rule"], "x")
                with self.assertRaises(bw.ProtocolError):
                    sub.recv(2)
        finally:
            pub.close(linger=0)

    def test_alarms_generator(self) -> None:
        ep = free_endpoint()
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.bind(ep)
        try:
            with bw.Subscriber(ep) as sub:
                time.sleep(0.3)
                for rule, level in [("a", "warning"), ("b", "critical"), ("c", "critical")]:
                    pub.send_multipart([b"beamwatch.alarm", json.dumps({"rule": rule, "level": level}).encode()])
                got = [a["rule"] for a in sub.alarms(timeout_s=1.0, levels=("critical",))]
                self.assertEqual(got, ["b", "c"])
            with bw.Subscriber(ep, topics="beamwatch.frame") as sub:
                with self.assertRaises(ValueError):
                    next(sub.alarms())
        finally:
            pub.close(linger=0)

    def test_parse_message(self) -> None:
        self.assertEqual(bw.parse_message([b"t", b'{"a": 1}']), ("t", {"a": 1}))
        for bad in ([b"t"], [b"t", b"[1]"], [b"t", b"{", b""]):
            with self.assertRaises(bw.ProtocolError):
                bw.parse_message(bad)


class SessionTest(unittest.TestCase):
    def write(self, path: str, alarms_layout: str, version: int) -> dict:
        import h5py

        rng = np.random.default_rng(0)
        frames = rng.integers(0, 1000, (3, 8, 10), dtype=np.uint16)
        alarm = {"type": "alarm", "rule": "damage-onset", "level": "warning", "frame": 2, "message": "é"}
        with h5py.File(path, "w") as f:
            f.attrs["beamwatch_format"] = f"beamwatch-session/{version}"
            f.attrs["series"] = "s1"
            f.attrs["complete"] = np.uint64(1)
            f.attrs["grid_rows"] = np.uint64(1)
            f.attrs["summary"] = json.dumps({"frames_received": 3})
            if version == 2:
                g = f.create_group("data/frames")
                g["data"] = frames
                g["dim1"] = np.arange(3, dtype=np.uint64)
                f["frames"] = h5py.SoftLink("/data/frames/data")
                f["frame_index"] = h5py.SoftLink("/data/frames/dim1")
            else:
                f["frames"] = frames
                f["frame_index"] = np.arange(3, dtype=np.uint64)
            r = f.create_group("received")
            r["index"] = np.arange(3, dtype=np.uint64)
            r["dose_e_per_a2"] = np.full(3, 2.0)
            r["cumulative_e_per_a2"] = np.array([2.0, 4.0, 6.0, 8.0])  # one row longer (a crash)
            r["dose_sources"] = np.array([0b010110, 0, 0], dtype=np.uint8)
            a = f.create_group("analysis")
            a["index"] = np.array([1, 2], dtype=np.uint64)
            a["dissimilarity"] = np.zeros((2, 1, 2), np.float32)
            a["status"] = np.zeros((2, 1, 2), np.uint8)
            text = json.dumps(alarm).encode()
            if alarms_layout == "u8":
                rows = np.zeros((2, 4096), np.uint8)
                rows[0, :len(text)] = np.frombuffer(text, np.uint8)
                rows[1, :10] = np.frombuffer(text[:10], np.uint8)  # cut
                f["alarms"] = rows
            elif alarms_layout == "fixed":
                f["alarms"] = np.array([text, text[:10]], dtype="S4096")
            else:
                f.create_dataset("alarms", data=[text.decode(), text[:10].decode()], dtype=h5py.string_dtype())
        return {"frames": frames, "alarm": alarm}

    def test_every_alarm_layout(self) -> None:
        for layout, version in [("u8", 1), ("fixed", 2), ("vlen", 2)]:
            with self.subTest(layout=layout), tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "s.h5")
                w = self.write(path, layout, version)
                s = bw.read_session(path)
                np.testing.assert_array_equal(s["frames"], w["frames"])
                self.assertEqual(s["frames"].dtype, np.uint16)
                self.assertEqual(s["series"], "s1")
                self.assertTrue(s["complete"])
                self.assertEqual(s["summary"], {"frames_received": 3})
                self.assertEqual(len(s["cumulative_dose_e_per_a2"]), 3)  # cut to the shortest column
                self.assertEqual(s["dissimilarity"].shape, (2, 1, 2))
                self.assertEqual(s["alarms"][0], w["alarm"])
                self.assertIn("raw", s["alarms"][1])
                self.assertEqual(bw.decode_dose_sources(s["received"]["dose_sources"][0]),
                                 {"beam_current_pa": "series header", "dwell_time_us": "frame header",
                                  "pixel_size_a": "frame header", "per_frame_from_config": False,
                                  "upper_estimate": False})
                self.assertIsNone(bw.read_session(path, frames=False)["frames"])

    def test_not_a_session(self) -> None:
        import h5py

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.h5")
            with h5py.File(path, "w") as f:
                f["x"] = 1
            with self.assertRaises(bw.SessionFormatError):
                bw.read_session(path)
            with self.assertRaises(FileNotFoundError):
                bw.read_session(os.path.join(d, "missing.h5"))


if __name__ == "__main__":
    unittest.main()
