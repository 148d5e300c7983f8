# Runs in: Nion Swift (inside the Swift application, on the microscope PC), as a plug-in.
# UNTESTED: written against Nion Swift's documented plug-in API (nion.typeshed API_1_0 /
# HardwareSource_1_0: api_broker.get_api, api.create_panel, get_hardware_source_by_id,
# create_view_task, grab_next_to_finish, api.queue_task) without a Nion Swift installation to run it
# in. Check it with the simulator (nionswift-usim, scan device "usim_scan_device") before using it
# on an instrument.
#
# A "beamwatch" panel with Start / Stop: while started, every frame of the chosen scan channel is
# forwarded to `beamwatch run` as one series, with the dwell time and the scan pixel size from
# Swift and the probe current typed into the panel (Swift does not know it).
#
# Install, in the Python environment Nion Swift runs in:
#   pip install /path/to/beamwatch/tools/python          (pyzmq and numpy come with it)
# then copy this file to  <that environment's site-packages>/nionswift_plugin/beamwatch_forwarder/__init__.py
# (Swift loads every package under the `nionswift_plugin` namespace) and restart Swift.
#
# The daemon connects to the PUSH socket this plug-in binds:
#   [ingest]  endpoint = "tcp://127.0.0.1:5555"  mode = "connect"  format = "auto"

import gettext
import threading
import time

import beamwatch_client as bw

_ = gettext.gettext

ENDPOINT = "tcp://127.0.0.1:5555"
# Scan device ids: "superscan" on Nion instruments, "usim_scan_device" in the simulator.
SCAN_DEVICE_IDS = ("superscan", "usim_scan_device")


def _scan_metadata(xdata):
    """The scan part of a frame's metadata (its place differs between Swift versions)."""
    md = dict(getattr(xdata, "metadata", {}) or {})
    return md.get("scan") or md.get("hardware_source") or {}


def _pixel_size_a(xdata):
    """Scan pixel size in Å from the frame's x calibration, or None when it is not in nm/Å."""
    cals = getattr(xdata, "dimensional_calibrations", None) or []
    if not cals:
        return None
    cal = cals[-1]
    scale, units = abs(float(cal.scale)), (cal.units or "").strip()
    factor = {"nm": 10.0, "Å": 1.0, "A": 1.0, "pm": 0.01, "µm": 1e4, "um": 1e4}.get(units)
    return scale * factor if factor and scale > 0 else None


class BeamwatchPanelDelegate:
    def __init__(self, api):
        self.__api = api
        self.panel_id = "beamwatch-forwarder-panel"
        self.panel_name = _("beamwatch")
        self.panel_positions = ["left", "right"]
        self.panel_position = "right"
        self.__thread = None
        self.__stop = threading.Event()

    def create_panel_widget(self, ui, document_controller):
        column = ui.create_column_widget()

        def row(label, widget):
            r = ui.create_row_widget()
            r.add(ui.create_label_widget(label))
            r.add_spacing(8)
            r.add(widget)
            r.add_stretch()
            column.add(r)
            column.add_spacing(4)

        self.__endpoint = ui.create_line_edit_widget()
        self.__endpoint.text = ENDPOINT
        self.__channel = ui.create_line_edit_widget()
        self.__channel.text = "0"
        self.__current = ui.create_line_edit_widget()
        self.__current.text = "20"
        row(_("Endpoint"), self.__endpoint)
        row(_("Channel (index or name)"), self.__channel)
        row(_("Probe current (pA)"), self.__current)
        buttons = ui.create_row_widget()
        start = ui.create_push_button_widget(_("Start"))
        stop = ui.create_push_button_widget(_("Stop"))
        buttons.add(start)
        buttons.add_spacing(8)
        buttons.add(stop)
        buttons.add_stretch()
        column.add(buttons)
        self.__status = ui.create_label_widget(_("idle"))
        column.add(self.__status)
        column.add_stretch()
        start.on_clicked = self.__start
        stop.on_clicked = self.__stop.set
        return column

    def __say(self, text):
        # Widgets are touched on the UI thread only.
        def update():
            self.__status.text = text

        self.__api.queue_task(update)

    def __start(self):
        if self.__thread is not None and self.__thread.is_alive():
            return
        try:
            current = float(self.__current.text)
        except ValueError:
            self.__say(_("the probe current must be a number (pA)"))
            return
        self.__stop.clear()
        args = (self.__endpoint.text.strip(), self.__channel.text.strip(), current)
        self.__thread = threading.Thread(target=self.__forward, args=args, daemon=True)
        self.__thread.start()

    def __scan_device(self):
        for device_id in SCAN_DEVICE_IDS:
            hs = self.__api.get_hardware_source_by_id(device_id, version="1.0")
            if hs is not None:
                return hs
        raise RuntimeError(f"no scan device ({', '.join(SCAN_DEVICE_IDS)})")

    def __forward(self, endpoint, channel, beam_current_pa):
        series = time.strftime("swift_%Y%m%d-%H%M%S")
        try:
            scan = self.__scan_device()
            dwell_time_us = float((scan.get_frame_parameters() or {}).get("pixel_time_us", 0)) or None
            with bw.Sender(endpoint, bind=True, send_timeout_s=5.0) as tx:
                view_task = scan.create_view_task()
                try:
                    started = False
                    while not self.__stop.is_set():
                        frames = view_task.grab_next_to_finish()
                        xdata = self.__pick(frames, channel)
                        if xdata is None or xdata.data.ndim != 2:
                            continue
                        if not started:
                            tx.start_series(series, dwell_time_us=dwell_time_us, beam_current_pa=beam_current_pa,
                                            pixel_size_a=_pixel_size_a(xdata))
                            started = True
                        i = tx.send_frame(xdata.data, timestamp_ns=time.time_ns())
                        self.__say(f"{series}: frame {i} sent")
                    if started:
                        tx.end_series()
                finally:
                    view_task.close()
            self.__say(f"{series}: stopped")
        except Exception as e:  # shown in the panel; Swift's log has the traceback
            self.__say(f"stopped: {e}")
            raise

    @staticmethod
    def __pick(frames, channel):
        if not frames:
            return None
        if channel.isdigit():
            i = int(channel)
            return frames[i] if i < len(frames) else None
        for xdata in frames:
            md = _scan_metadata(xdata)
            if channel in (md.get("channel_name"), md.get("channel_id")):
                return xdata
        return None

    def close(self):
        self.__stop.set()


class BeamwatchExtension:
    # Required for Swift to recognise this as an extension class.
    extension_id = "beamwatch.forwarder"

    def __init__(self, api_broker):
        api = api_broker.get_api(version="~1.0", ui_version="~1.0")
        # Keep the reference, or the panel is closed at once.
        self.__panel_ref = api.create_panel(BeamwatchPanelDelegate(api))

    def close(self):
        self.__panel_ref.close()
        self.__panel_ref = None
