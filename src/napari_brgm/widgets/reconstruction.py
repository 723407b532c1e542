"""The 'BRGM Reconstruction' dock widget: a form that calls `napari_brgm.engine.reconstruct` in a thread.

The widget knows nothing of the math: it turns the chosen layers into a `Request`
(`widgets.layers`), runs the engine in a napari thread worker, relays the engine's progress
reports to the GUI thread with a Qt signal and shows the `Result` as layers. With *Slices: all*
or a range of a volume it calls `reconstruct_volume` instead and fills volume layers
(`widgets.volume`) slice by slice as the engine hands over each finished slice (another signal).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from functools import partial
from pathlib import Path

from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QSettings, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_brgm.engine import Progress, reconstruct
from napari_brgm.engine.geometry import detail_lost
from napari_brgm.engine.reconstruction import kspace_views
from napari_brgm.engine.methods import DEFAULT_RESTARTS, METHOD_SPECS, PRIOR_KINDS
from napari_brgm.engine.settings import INTERVAL_LEVELS, Settings
from napari_brgm.engine.tasks import TASK_SPECS
from napari_brgm.engine.volume import reconstruct_volume
from napari_brgm.priors import CheckpointError, builtin_priors, prior_kind
from napari_brgm.widgets import layers as L
from napari_brgm.widgets import volume as V
from napari_brgm.widgets.loss_plot import LossPlot
from napari_brgm.widgets.options import AdvancedOptions

SR_FACTORS = (2, 4, 8, 16, 32)
MAX_OVERSIZE = 4  # the engine refuses inputs more than this many times the prior's measurement size
LOAD_CHECKPOINT = "Load checkpoint…"
CHECKPOINT_FILTER = "Priors (*.safetensors *.pkl);;All files (*)"
CALIBRATION_FILTER = "Calibration files (*.calibration.json *.json);;All files (*)"
AUTO_CALIBRATION = "auto"  # the calibration label when the engine looks beside the prior
AUTO_CALIBRATION_TIP = "auto: <prior>.calibration.json beside the prior when there is one (napari-brgm calibrate)"
RECENT_CHECKPOINTS = 5
METHODS = (  # (combo text, combo data); "iagan_vi" becomes method="iagan", iagan_vi=True (FIXED_OPTIONS)
    ("MAP (point estimate)", "map"),
    ("Variational (samples + uncertainty)", "vi"),
    ("CSGM (latent search, point estimate)", "csgm"),
    ("IAGAN (adapts the prior to the image)", "iagan"),
    ("IAGAN + variational (samples + uncertainty)", "iagan_vi"),
    ("Deep Image Prior (no prior needed)", "dip"),
    ("RED-Diff (diffusion prior, spread over seeds)", "reddiff"),
    ("Normalizing flow (samples + uncertainty)", "flow"),
)
SPREAD_METHODS = ("vi", "iagan_vi", "dip", "reddiff", "flow")  # the methods that return samples and an uncertainty map
FIXED_OPTIONS = {"iagan": {"iagan_vi": False}, "iagan_vi": {"iagan_vi": True}}  # set by the method box, not Advanced
METHOD_FOR_KIND = {"stylegan2": "map", "diffusion": "reddiff", "flow": "flow"}  # after loading a prior of that kind
XRAY_MODALITIES = ("CR", "DX")  # DICOM modalities of projection radiographs (chest X-rays and the like)
XRAY_PRIOR_WORDS = ("xray", "cxr", "chest")  # a prior whose name contains one of these is taken for an X-ray prior


def stage_plan(options: dict) -> list[str]:
    """The progress stages a run goes through, in order (each of `steps` steps at most)."""
    method = options["method"]
    if method == "vi":
        return ["map", "vi"] if options.get("vi_mode", "elbo") == "elbo" else ["vi"]
    if method == "iagan":
        return ["csgm", "iagan", "vi"] if options.get("iagan_vi") else ["csgm", "iagan"]
    if method == "flow":
        return ["flow", "flow-langevin"]
    return [method]


def stage_steps(options: dict) -> int:
    """Steps one stage reports at most: DIP counts the steps of all its restarts in one stage."""
    restarts = options.get("restarts") or DEFAULT_RESTARTS.get(options["method"], 1)
    return options["steps"] * (restarts if options["method"] == "dip" else 1)


def _engine_method(entry: str) -> str:
    """The engine's method of a method box entry."""
    return "iagan" if entry == "iagan_vi" else entry


def _kind_of(method: str) -> str | None:
    """The prior kind a widget method needs (None: no prior)."""
    return PRIOR_KINDS[_engine_method(method)]


def xray_modality(layer) -> str | None:
    """'CR' or 'DX' when the layer's `metadata["modality"]` (set by the reader) says it is a radiograph, else None."""
    metadata = getattr(layer, "metadata", None)
    modality = str(metadata.get("modality") or "").strip().upper() if hasattr(metadata, "get") else ""
    return modality if modality in XRAY_MODALITIES else None


def looks_like_xray_prior(name: str) -> bool:
    """Whether a prior's name (a built-in name or a file name) says it is an X-ray prior.

    The rule: the lower-cased name, with '-', '_' and spaces dropped (so 'X-ray' counts), contains
    one of `XRAY_PRIOR_WORDS` ('xray', 'cxr', 'chest').
    """
    flat = Path(str(name)).name.lower().replace("-", "").replace("_", "").replace(" ", "")
    return any(word in flat for word in XRAY_PRIOR_WORDS)


def xray_prior_installed(names=None) -> bool:
    """Whether a built-in prior is an X-ray prior (`looks_like_xray_prior`); `names` defaults to `builtin_priors()`.

    Without one, the widget selects Deep Image Prior for CR/DX images and warns before running an
    X-ray with a prior-based method.
    """
    return any(looks_like_xray_prior(name) for name in (builtin_priors() if names is None else names))


def _builtin_priors_are() -> str:
    """How the X-ray warnings describe the built-in priors."""
    names = list(builtin_priors())
    if names and all("brain" in name.lower() for name in names):
        return "the built-in priors are brain MRI priors"
    return "no built-in prior is an X-ray prior" if names else "no built-in prior is installed"


def _settings() -> QSettings:
    """Where the widget remembers checkpoints and the last prior between sessions."""
    return QSettings("napari-brgm", "reconstruction")


def fitting_factors(shape: tuple[int, int], resolution: int | None = None) -> list[int]:
    """The SR factors that suit an input of this size.

    With the prior's resolution R known (after a first run): the factors that divide R and leave
    the input within the engine's limit of MAX_OVERSIZE × R/f. Before that: outputs up to 8192 px.
    """
    if resolution:
        return [f for f in SR_FACTORS if resolution % f == 0 and max(shape) <= MAX_OVERSIZE * resolution // f]
    return [f for f in SR_FACTORS if max(shape) * f <= 8192]


class Run(QObject):
    """One reconstruction in a napari thread worker, with its stop flag and its progress history.

    The engine calls `progress` in the worker thread; emitting `progressed` there queues the report
    to the GUI thread, where the widget draws it. A volume run's engine also hands each finished
    slice to `sliced` (k, Result), queued the same way; progress then counts every slice's share.
    """

    progressed = Signal(object)
    sliced = Signal(int, object)
    screened = Signal(object)  # one slice's pre-run out-of-distribution record, emitted before the engine starts
    measured = Signal(object, object)  # k-space: (zero-filled image, sampling mask), emitted before the engine starts

    def __init__(self, request: L.Request, layer: Image, engine):
        super().__init__()
        self.request, self.layer = request, layer
        self.stop = threading.Event()
        self.losses: list[float] = []
        self.reports = 0  # progress reports received
        self.stage_starts: list[int] = []
        self.stage: str | None = None
        self.first: tuple[int, float] | None = None  # (steps done, elapsed) at the first report, for the ETA
        self.last: Progress | None = None
        self.result = None
        self.warned_ood = False  # the pre-run score already warned
        self.plan = stage_plan(request.options)
        self.fractions: dict[int, float] = {}  # volume runs: the share of each slice's work done (1: finished)
        self.finished_slices: set[int] = set()  # volume runs: the slices handed over
        self.flight: tuple[int, ...] = ()  # volume runs: the slices in flight; the loss curve is theirs
        self.clock: tuple[float, float] | None = None  # volume runs: (wall time, fraction done) at the first report
        self.layers: V.VolumeLayers | None = None  # volume runs: the result layers being filled
        # the worker reaches its run through a weak reference: napari keeps every worker it made (the window's
        # task list, for the close dialog), and a run holds its request and result (images, samples)
        self.worker = create_worker(_work, weakref.ref(self), engine, _start_thread=False, _ignore_errors=True)

    @property
    def volume(self) -> bool:
        return self.request.slices is not None

    def _work(self, engine):
        if self.volume:  # a volume's slices are judged one by one by the engine
            hooks = {"slices": self.request.slices, "on_slice": self.sliced.emit}
        else:
            self.screened.emit(L.screen_request(self.request))  # off the UI thread: the first call loads the flow
            hooks = {}
            if self.request.options["task"] == "kspace":  # the zero-filled image, before the solver starts
                hooks["on_prepared"] = lambda prep: self.measured.emit(*kspace_views(prep))
        return engine(self.request.image, mask=self.request.mask, progress=self.progressed.emit,
                      should_stop=self._should_stop, **hooks, **self.request.options)

    def _should_stop(self) -> bool:
        """Cancel, a deleted input or a closed widget (`stop`), or napari cancelling its tasks as the window closes."""
        return self.stop.is_set() or self.worker.abort_requested

    def record(self, report: Progress) -> None:
        if self.volume and report.slices_in_flight != self.flight:  # next slice (or MAP batch): a new curve
            self.flight, self.losses, self.stage_starts, self.stage = report.slices_in_flight, [], [], None
        if report.stage != self.stage:
            self.stage_starts.append(len(self.losses))
            self.stage = report.stage
        if math.isfinite(report.loss):  # stages without a loss (the Laplace posterior) leave the curve alone
            self.losses.append(float(report.loss))
        self.reports += 1
        self.last = report
        if self.first is None:
            self.first = (self.reports, report.elapsed)
        if self.volume:
            share = self._slice_steps() / self.slice_steps
            for k in report.slices_in_flight:
                self.fractions[k] = max(self.fractions.get(k, 0.0), share)
            if self.clock is None:
                self.clock = (time.perf_counter(), self.fraction)

    def finish_slice(self, k: int) -> None:
        self.fractions[k] = 1.0
        self.finished_slices.add(k)

    @property
    def finished(self) -> int:
        """Volume runs: slices finished so far."""
        return len(self.finished_slices)

    @property
    def fraction(self) -> float:
        """Volume runs: the share of the whole run done."""
        return sum(self.fractions.values()) / len(self.request.slices)

    def _slice_steps(self) -> int:
        """Steps of one slice done: the planned stages before this one, and this stage's fraction of `stage_steps`."""
        per_stage = stage_steps(self.request.options)
        before = self.plan.index(self.stage) if self.stage in self.plan else 0
        return min(self.slice_steps, before * per_stage + round(per_stage * self.last.step / max(self.last.total, 1)))

    @property
    def done(self) -> int:
        """Progress in steps (a volume run: every slice's share of its steps)."""
        if self.volume:
            return min(self.total_steps, round(self.slice_steps * sum(self.fractions.values())))
        return 0 if self.last is None else self._slice_steps()

    @property
    def slice_steps(self) -> int:
        """Steps of one image (or one slice of a volume)."""
        return stage_steps(self.request.options) * len(self.plan)

    @property
    def total_steps(self) -> int:
        return self.slice_steps * (len(self.request.slices) if self.volume else 1)

    def seconds_left(self) -> float | None:
        """Remaining steps of this and the planned later stages at the rate seen so far (a volume: the wall time
        per share of the run since the first report, times the share left)."""
        if self.volume:
            if self.clock is None or self.fraction <= self.clock[1]:
                return None
            return (time.perf_counter() - self.clock[0]) / (self.fraction - self.clock[1]) * (1 - self.fraction)
        if self.first is None or self.last is None or self.reports <= self.first[0]:
            return None
        rate = (self.last.elapsed - self.first[1]) / (self.reports - self.first[0])
        later = self.plan[self.plan.index(self.stage) + 1:] if self.stage in self.plan else []
        return rate * (self.last.total - self.last.step + stage_steps(self.request.options) * len(later))

    def status(self, ended: str | None = None) -> str:
        """'MAP 120/501 · ~45 s left' while running; 'VI 501/501 · finished' once `ended`.

        A volume run: 'slice 2/4 (z11) · MAP 120/501 · ~1:30 left' ('slices 1–4/4 (z10–z13)' for a MAP batch),
        then '3/4 slices · stopped'.
        """
        if self.volume and ended:
            return f"{self.finished}/{len(self.request.slices)} slices · {ended}"
        if self.last is None:
            return ended or "loading the prior…"
        left = self.seconds_left()
        tail = f" · {ended}" if ended else "" if left is None else f" · ~{_duration(left)} left"
        where = f"{self.where()} · " if self.volume else ""
        return f"{where}{self.last.stage.upper()} {self.last.step}/{self.last.total}{tail}"

    def where(self) -> str:
        """The slices in flight: 'slice 2/4 (z11)' or 'slices 1–4/4 (z10–z13)'."""
        flight, slices = self.last.slices_in_flight or (self.request.slices[0],), self.request.slices
        first, last = slices.index(flight[0]) + 1, slices.index(flight[-1]) + 1
        if len(flight) == 1:
            return f"slice {first}/{len(slices)} (z{flight[0]})"
        return f"slices {first}–{last}/{len(slices)} (z{flight[0]}–z{flight[-1]})"


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class ReconstructionWidget(QWidget):
    """Choose an image (and a mask), a task, a prior and a method; run BRGM; get the results as layers."""

    run_finished = Signal(object)  # the Run, after its layers are shown (or its error reported)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.runs: dict = {}  # by the input layer's unique_id: one run in flight per layer
        self._shown = _nobody  # weakly, the run drawn in the progress bar and the loss plot (`shown`)
        self.resolutions: dict[str, int] = {}  # prior → resolution, learnt from finished runs
        self._kinds: dict[str, str] = {}  # prior → kind, read once from each file's header
        self._listed_kind: str | None = None  # the kind of prior the prior box lists
        self._method_chosen: set[int] = set()  # unique_ids of the input layers whose method the user chose
        self._defaulting = False  # True while the widget itself sets the method (not a choice of the user)
        self._build()
        for event in ("inserted", "removed", "moved", "changed"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._stop_orphans)
        self.viewer.dims.events.current_step.connect(self._update_info)
        self.destroyed.connect(partial(_stop_all, self.runs))
        self._docked = False  # set once the widget has a parent (napari's dock); losing it is closing the panel
        self._refresh_layers()
        self._on_task()
        self._on_method()

    def _build(self) -> None:
        self.image_combo = QComboBox(toolTip="The image to reconstruct; for a volume, the displayed slice, "
                                             "every slice or a range (Slices)")
        self.info = QLabel()
        self.slices_combo = QComboBox(toolTip="Volumes: the slice under the viewer's z, every slice, or the range "
                                              "A:B (slices A to B-1 along z); all and range give volume layers")
        for text, value in V.SLICE_MODES:
            self.slices_combo.addItem(text, value)
        self.range_edit = QLineEdit(placeholderText="A:B", enabled=False,
                                    toolTip="Slices A to B-1 along z (B excluded, as in Python), e.g. 10:14")
        self.slices_label = QLabel("Slices")
        self.slices_row = QWidget()
        self.task_combo = QComboBox()
        self.task_combo.addItem("Super-resolution", "superres")
        self.task_combo.addItem("Inpainting", "inpaint")
        self.task_combo.addItem("MRI k-space (undersampled)", "kspace")
        self.task_combo.addItem("Deblurring", "deblur")
        self.task_combo.setToolTip("MRI k-space: the slice's k-space is simulated and undersampled by the "
                                   "acceleration (Advanced); deblurring: the PSF is set in Advanced")
        self.factor_combo = QComboBox(toolTip="Output = factor × input size (choices that suit the image)")
        self.mask_combo = QComboBox(toolTip="Labels or Shapes: painted / drawn pixels are MISSING")
        self.new_mask_button = QPushButton("New mask", toolTip="An empty Labels layer on the image grid to paint")
        self.nonfinite_check = QCheckBox("NaN/inf pixels are missing too",
                                         toolTip="Inpainting: the image's non-finite pixels join the mask (with no "
                                                 "mask layer, they are the mask); otherwise a run refuses them")
        self.prior_combo = QComboBox(toolTip="A built-in prior or a checkpoint of the kind the method needs "
                                             "(StyleGAN2, diffusion or flow)")
        self.method_combo = QComboBox(toolTip="BRGM MAP / variational, CSGM, IAGAN, Deep Image Prior, RED-Diff or a "
                                              "normalizing flow (docs/engine.md)")
        for text, value in METHODS:
            self.method_combo.addItem(text, value)
        self.back_project_check = QCheckBox(
            "Back-project onto the measurement",
            toolTip="Post-step x + A⁺(y − A·x): the result reproduces the measured pixels exactly")
        self.steps_spin = _spin(1, 1_000_000, 501, "Optimisation steps per stage (BRGM uses 501)")
        self.samples_spin = _spin(1, 256, 16, "Samples behind the uncertainty map: posterior samples (variational, "
                                               "flow), seeds (RED-Diff) or last iterates (Deep Image Prior)")
        self.level_combo = QComboBox(toolTip="Level of the central interval of the samples: calibrated when a "
                                             "calibration record matches, else mean ± m_S·std")
        for level in INTERVAL_LEVELS:
            self.level_combo.addItem(L.percent(level), level)
        self.level_combo.setCurrentIndex(self.level_combo.findData(Settings.interval))
        self.interval_check = QCheckBox("Interval layers", toolTip="Adds the lower and upper ends of the central "
                                        "interval, calibrated when a calibration file matches")
        self.calibration: str | None = None  # reconstruct(calibration=…): None looks beside the prior
        self.calibration_label = QLabel(AUTO_CALIBRATION, toolTip=AUTO_CALIBRATION_TIP)
        self.calibration_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # long names
        self.calibration_button = QPushButton("Calibration…", toolTip="Choose a calibration file (napari-brgm calibrate)")
        self.auto_calibration_button = QPushButton("Auto", toolTip="Back to the file beside the prior, if any")
        self.seed_spin = _spin(0, 2**31 - 1, 0, "Seeds every random draw: same seed, same result")
        self.device_combo = QComboBox()
        for text, value in (("Auto (CUDA if present)", "auto"), ("CPU", "cpu"), ("CUDA", "cuda")):
            self.device_combo.addItem(text, value)
        self.advanced = AdvancedOptions()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.progress_bar = QProgressBar(textVisible=True)
        self.progress_bar.setFormat("idle")
        self.status = QLabel(wordWrap=True)
        self.loss_plot = LossPlot()

        slices_row = QHBoxLayout(self.slices_row)
        slices_row.setContentsMargins(0, 0, 0, 0)
        slices_row.addWidget(self.slices_combo)
        slices_row.addWidget(self.range_edit, 1)
        mask_row = QHBoxLayout()
        mask_row.addWidget(self.mask_combo, 1)
        mask_row.addWidget(self.new_mask_button)
        interval_row = QHBoxLayout()
        interval_row.addWidget(self.level_combo)
        interval_row.addWidget(self.interval_check, 1)
        calibration_row = QHBoxLayout()
        calibration_row.addWidget(self.calibration_label, 1)
        calibration_row.addWidget(self.calibration_button)
        calibration_row.addWidget(self.auto_calibration_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        form = QFormLayout()
        for label, field in (("Input", self.image_combo), ("", self.info), (self.slices_label, self.slices_row),
                             ("Task", self.task_combo),
                             ("Factor", self.factor_combo), ("Mask", mask_row), ("", self.nonfinite_check),
                             ("Prior", self.prior_combo),
                             ("Method", self.method_combo), ("", self.back_project_check),
                             ("Steps", self.steps_spin), ("Samples", self.samples_spin), ("Interval", interval_row),
                             ("Calibration", calibration_row), ("Seed", self.seed_spin),
                             ("Device", self.device_combo)):
            form.addRow(label, field)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self._on_input)
        self.slices_combo.currentIndexChanged.connect(self._on_slices)
        self.range_edit.textChanged.connect(self._update_info)
        self.task_combo.currentIndexChanged.connect(self._on_task)
        self.method_combo.currentIndexChanged.connect(self._on_method)
        self.method_combo.currentIndexChanged.connect(self._on_method_chosen)
        self.prior_combo.activated.connect(self._on_prior_activated)
        self.new_mask_button.clicked.connect(self.new_mask)
        self.calibration_button.clicked.connect(self.choose_calibration)
        self.auto_calibration_button.clicked.connect(lambda: self.set_calibration(None))
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    # --- the form ---------------------------------------------------------------------------------

    def _refresh_layers(self, event=None) -> None:
        """Keep the layer choices in step with the viewer (names are unique in napari)."""
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        _set_choices(self.image_combo, [x.name for x in self.viewer.layers if isinstance(x, Image)
                                        and x.metadata.get("brgm", {}).get("kind") != "preview"])
        _set_choices(self.mask_combo, [x.name for x in self.viewer.layers if isinstance(x, Labels | Shapes)])
        self._on_input()

    def _layer(self, combo: QComboBox):
        name = combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _on_input(self, *_) -> None:
        run = self._run_for(self._layer(self.image_combo))
        if run is not None:
            self._show(run)
        self._default_method()
        self._update_factors()
        self._update_slices()
        self._update_info()
        self._update_buttons()

    def _update_slices(self) -> None:
        """The Slices row only for a volume input."""
        layer = self._layer(self.image_combo)
        volume = layer is not None and layer.ndim == 3
        self.slices_label.setVisible(volume)
        self.slices_row.setVisible(volume)

    def _on_slices(self, *_) -> None:
        """Range: the edit is enabled, first filled with the four slices from the displayed one."""
        ranged = self.slices_combo.currentData() == "range"
        self.range_edit.setEnabled(ranged)
        layer = self._layer(self.image_combo)
        if ranged and not self.range_edit.text().strip() and layer is not None and layer.ndim == 3:
            try:
                k = L.displayed_slice(layer, self.viewer)
            except ValueError:
                k = 0
            self.range_edit.setText(f"{k}:{min(k + 4, layer.data.shape[0])}")
        self._update_info()

    def _on_method_chosen(self, *_) -> None:
        """A method set by anyone but `_default_method` (the user, a script, a loaded prior) is kept for the input."""
        layer = self._layer(self.image_combo)
        if not self._defaulting and layer is not None:
            self._method_chosen.add(layer.unique_id)

    def _default_method(self) -> None:
        """Deep Image Prior for a CR/DX input when no X-ray prior is installed, unless a method was chosen for it."""
        layer = self._layer(self.image_combo)
        modality = xray_modality(layer)
        if (modality is None or layer.unique_id in self._method_chosen or self.method_combo.currentData() == "dip"
                or xray_prior_installed()):
            return
        self._defaulting = True
        try:
            self.method_combo.setCurrentIndex(self.method_combo.findData("dip"))
        finally:
            self._defaulting = False
        show_info(f"{layer.name} is {modality}: no X-ray prior is installed: Deep Image Prior, which needs none, "
                  "is selected")

    def _update_info(self, *_) -> None:
        layer = self._layer(self.image_combo)
        if layer is None:
            self.info.setText("add an image layer")
            return
        h, w = layer.data.shape[-2:]
        if layer.ndim == 3 and self.slices_combo.currentData() != "displayed":
            try:
                slices = V.chosen_slices(layer, self.slices_combo.currentData(), self.range_edit.text())
            except ValueError as err:
                self.info.setText(str(err))
                return
            self.info.setText(f"{len(slices)} of {layer.data.shape[0]} slices (z{slices[0]}–z{slices[-1]}) · "
                              f"{h}×{w} px each")
        elif layer.ndim == 3:
            try:
                k = L.displayed_slice(layer, self.viewer)
            except ValueError:
                self.info.setText(f"volume of {layer.data.shape[0]} slices; show it in 2-D to pick a slice")
                return
            self.info.setText(f"slice z{k} of {layer.data.shape[0]} · {h}×{w} px")
        else:
            self.info.setText(f"{h}×{w} px")

    def _update_factors(self) -> None:
        layer = self._layer(self.image_combo)
        shape = layer.data.shape[-2:] if layer is not None else (1, 1)
        previous = self.factor_combo.currentData() or 4
        self.factor_combo.clear()
        for f in fitting_factors(shape, self.resolutions.get(self.prior_combo.currentData())):
            self.factor_combo.addItem(f"×{f}", f)
        index = self.factor_combo.findData(previous)
        self.factor_combo.setCurrentIndex(index if index >= 0 else 0)

    def _on_task(self, *_) -> None:
        task = self.task_combo.currentData()
        inpaint = task == "inpaint"
        self.factor_combo.setEnabled(task == "superres")
        self.mask_combo.setEnabled(inpaint)
        self.new_mask_button.setEnabled(inpaint)
        self.nonfinite_check.setEnabled(inpaint)
        self.advanced.show_options("task", TASK_SPECS[task].options)
        if task in ("kspace", "deblur"):  # their settings (acceleration and mask, the PSF) live there
            self.advanced.toggle.setChecked(True)

    def _on_method(self, *_) -> None:
        method = self.method_combo.currentData()
        for control in (self.samples_spin, self.level_combo, self.interval_check, self.calibration_label,
                        self.calibration_button, self.auto_calibration_button):
            control.setEnabled(method in SPREAD_METHODS)
        self.advanced.show_options("method", METHOD_SPECS[_engine_method(method)].options,
                                   hidden=FIXED_OPTIONS.get(method, {}))
        kind = _kind_of(method)
        self.prior_combo.setEnabled(kind is not None)  # Deep Image Prior uses no trained prior
        if kind is not None and kind != self._listed_kind:
            self._load_priors(kind)
        self._update_factors()

    def new_mask(self) -> Labels | None:
        """Add an empty Labels layer on the input's grid, select it for painting and as the mask."""
        image = self._layer(self.image_combo)
        if image is None:
            show_error("choose an input image layer first")
            return None
        labels = self.viewer.add_layer(L.new_mask_layer(image))
        labels.mode = "paint"
        self.mask_combo.setCurrentText(labels.name)
        self.task_combo.setCurrentIndex(self.task_combo.findData("inpaint"))
        return labels

    # --- priors -----------------------------------------------------------------------------------

    def _kind(self, prior: str) -> str | None:
        """The prior's kind (cached); None for a file that is gone or unreadable."""
        if prior not in self._kinds:
            try:
                self._kinds[prior] = prior_kind(prior)
            except (CheckpointError, OSError):
                return None
        return self._kinds[prior]

    def _load_priors(self, kind: str) -> None:
        """Built-in priors and remembered checkpoints of `kind`, then the file-dialog entry; select the last used."""
        self._listed_kind = kind
        self.prior_combo.clear()
        for name in sorted(builtin_priors()):
            if self._kind(name) == kind:
                self.prior_combo.addItem(name, name)
        for path in _recent_checkpoints():
            if self._kind(path) == kind:
                self._add_checkpoint_item(path)
        self.prior_combo.addItem(LOAD_CHECKPOINT, None)
        index = self.prior_combo.findData(_settings().value(f"prior/{kind}", ""))
        self.prior_combo.setCurrentIndex(max(index, 0))

    def _add_checkpoint_item(self, path: str) -> None:
        if self.prior_combo.findData(path) < 0:
            row = self._checkpoint_row()
            self.prior_combo.insertItem(row, Path(path).name, path)
            self.prior_combo.setItemData(row, path, Qt.ItemDataRole.ToolTipRole)

    def _checkpoint_row(self) -> int:
        """Where new checkpoints go: just above the 'Load checkpoint…' entry."""
        index = self.prior_combo.findText(LOAD_CHECKPOINT)
        return index if index >= 0 else self.prior_combo.count()

    def _on_prior_activated(self, index: int) -> None:
        if self.prior_combo.itemText(index) == LOAD_CHECKPOINT:
            self.load_checkpoint()
        self._update_factors()

    def load_checkpoint(self) -> str | None:
        """Ask for a prior file, add it to the choices and remember it.

        A prior of another kind than the method needs switches the method to one that uses it
        (StyleGAN2 → MAP, diffusion → RED-Diff, flow → normalizing flow), with a notice.
        """
        start = str(Path(_recent_checkpoints()[0]).parent) if _recent_checkpoints() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Load a prior", start, CHECKPOINT_FILTER)
        kind = self._kind(path) if path else None
        if kind is None:
            if path:
                show_error(f"{Path(path).name} is not a prior napari-brgm can read")
            needed = self._listed_kind
            self.prior_combo.setCurrentIndex(max(self.prior_combo.findData(_settings().value(f"prior/{needed}", "")), 0))
            return None
        settings = _settings()
        settings.setValue("checkpoints", [path, *[p for p in _recent_checkpoints() if p != path]][:RECENT_CHECKPOINTS])
        settings.setValue(f"prior/{kind}", path)
        if kind != self._listed_kind:
            index = self.method_combo.findData(METHOD_FOR_KIND[kind])
            show_info(f"{Path(path).name} is a {kind} prior: method set to {self.method_combo.itemText(index)}")
            self.method_combo.setCurrentIndex(index)  # lists the priors of that kind
        self._add_checkpoint_item(path)
        self.prior_combo.setCurrentIndex(self.prior_combo.findData(path))
        return path

    def choose_calibration(self) -> str | None:
        """Ask for a calibration file (made by `napari-brgm calibrate`) for the next runs."""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a calibration file", "", CALIBRATION_FILTER)
        if path:
            self.set_calibration(path)
        return path or None

    def set_calibration(self, path: str | None) -> None:
        """The calibration file of the next runs (None: the one beside the prior, if any)."""
        self.calibration = path
        self.calibration_label.setText(AUTO_CALIBRATION if path is None else Path(path).name)
        self.calibration_label.setToolTip(path or AUTO_CALIBRATION_TIP)

    # --- running ----------------------------------------------------------------------------------

    def _run_for(self, layer) -> Run | None:
        return None if layer is None else self.runs.get(layer.unique_id)

    def _alive(self, layer) -> bool:
        """Whether the layer is still in the viewer (the viewer hands out proxies: compare ids)."""
        return any(x.unique_id == layer.unique_id for x in self.viewer.layers)

    def _update_buttons(self) -> None:
        busy = self._run_for(self._layer(self.image_combo)) is not None
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def request(self) -> L.Request:
        """The run the form describes; ValueError with a message for the user if it cannot run."""
        layer = self._layer(self.image_combo)
        slices = V.chosen_slices(layer, self.slices_combo.currentData(), self.range_edit.text())
        task = self.task_combo.currentData()
        nonfinite = task == "inpaint" and self.nonfinite_check.isChecked()
        mask_layer = self._layer(self.mask_combo)
        painted = task == "inpaint" and (mask_layer is not None or not nonfinite)  # NaN/inf alone can be the mask
        if slices is None:
            image, k = L.input_slice(layer, self.viewer)
            mask = L.mask_slice(mask_layer, layer, k) if painted else None
        else:
            image, k = V.input_volume(layer), None
            mask = V.volume_mask(mask_layer, layer, slices) if painted else None
        method = self.method_combo.currentData()
        kind = _kind_of(method)
        prior = None if kind is None else self.prior_combo.currentData()
        if prior is None and kind is not None:
            raise ValueError(f"choose a {kind} prior: a built-in one or 'Load checkpoint…'")
        factor = self.factor_combo.currentData()
        spread = method in SPREAD_METHODS
        if task == "superres" and factor is None:
            raise ValueError(f"{layer.name!r} is too large for super-resolution: crop a region of interest")
        options = {"task": task, "factor": factor if task == "superres" else 1, "prior": prior,
                   "method": _engine_method(method), "steps": self.steps_spin.value(),
                   "samples": self.samples_spin.value(), "seed": self.seed_spin.value(),
                   "device": self.device_combo.currentData(), "back_project": self.back_project_check.isChecked(),
                   "interval": self.level_combo.currentData(),
                   "calibration": self.calibration if spread else None,
                   **({"nonfinite": "missing"} if nonfinite else {}),
                   **self.advanced.values(), **FIXED_OPTIONS.get(method, {})}
        return L.Request(layer_name=layer.name, slice_index=k, image=image, mask=mask, options=options,
                         interval_layers=spread and self.interval_check.isChecked(), slices=slices, spread=spread)

    def run(self) -> Run | None:
        """Start a run for the chosen input in a thread worker; problems become notifications."""
        try:
            request = self.request()
        except ValueError as exc:
            show_error(str(exc))
            return None
        layer = self.viewer.layers[request.layer_name]
        if self._run_for(layer) is not None:
            show_warning(f"a run for {layer.name!r} is already in flight")
            return None
        self._warn_xray_prior(layer, request)
        if request.options["prior"] is not None:  # a Deep Image Prior run keeps the remembered prior
            _settings().setValue(f"prior/{_kind_of(request.options['method'])}", request.options["prior"])
        run = Run(request, layer, reconstruct if request.slices is None else reconstruct_volume)
        deliver = partial(self._deliver, weakref.ref(run))  # weakly: a finished run goes with its last holder
        if run.volume:
            run.layers = V.VolumeLayers(self.viewer, layer, request)
            run.sliced.connect(lambda k, result: deliver(self._on_slice, k, result),
                               Qt.ConnectionType.QueuedConnection)  # the engine hands slices over from the worker
        run.progressed.connect(lambda report: deliver(self._on_progress, report),
                               Qt.ConnectionType.QueuedConnection)  # the engine reports from the worker thread
        run.screened.connect(lambda record: deliver(self._on_screened, record), Qt.ConnectionType.QueuedConnection)
        run.measured.connect(lambda zf, sampled: deliver(self._on_measured, zf, sampled),
                             Qt.ConnectionType.QueuedConnection)
        run.worker.returned.connect(lambda result: deliver(self._on_returned, result))
        run.worker.errored.connect(lambda exc: deliver(self._on_errored, exc))
        run.worker.warned.connect(lambda w: show_warning(str(w[0])))
        run.worker.finished.connect(lambda: deliver(self._on_finished))
        self.runs[layer.unique_id] = run
        self._show(run)
        self._update_buttons()
        run.worker.start()
        return run

    def event(self, event) -> bool:
        """Closing napari's dock (its ✕) takes the widget out of it: that cancels its runs, as Cancel would
        (nothing else could stop them: the panel is gone)."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                _stop_all(self.runs)
        return super().event(event)

    @property
    def shown(self) -> Run | None:
        """The run drawn in the progress bar and the loss plot (None once a finished run is no longer held)."""
        return self._shown()

    def _deliver(self, ref, handler, *args) -> None:
        """Hand a run's report to its handler on the GUI thread, unless the widget is gone (the viewer was closed):
        then the run is stopped and forgotten, and its late reports are dropped."""
        run = ref()
        if run is None:
            return
        if _deleted(self):
            run.stop.set()
            if handler == self._on_finished:
                self.runs.pop(run.layer.unique_id, None)
            return
        handler(run, *args)

    def _stop_orphans(self, event=None) -> None:
        """A run whose input layer was deleted is stopped: nobody can cancel it any more, and a 2-D run's
        results are dropped (a volume run keeps its finished slices, as after Cancel)."""
        for run in list(self.runs.values()):
            if not run.stop.is_set() and not self._alive(run.layer):
                run.stop.set()

    def _warn_xray_prior(self, layer: Image, request: L.Request) -> None:
        """At Run: a CR/DX input with a trained prior, none of them an X-ray prior, gets a warning (it still runs)."""
        prior = request.options["prior"]
        modality = xray_modality(layer)
        if prior is None or modality is None or xray_prior_installed() or looks_like_xray_prior(prior):
            return
        if prior in builtin_priors():
            risk = f"{_builtin_priors_are()}: on an X-ray they give confident nonsense"
        else:
            risk = (f"{_builtin_priors_are()} and {Path(prior).name} is not named as an X-ray prior: unless it "
                    "was trained on X-rays, it gives confident nonsense")
        show_warning(f"{request.label}: {layer.name} is {modality}, and {risk}; "
                     "Deep Image Prior needs no trained prior")

    def cancel(self) -> None:
        """Ask the chosen input's run to stop after its current step; its partial result is kept."""
        run = self._run_for(self._layer(self.image_combo))
        if run is not None:
            run.stop.set()
            self.status.setText(f"{run.request.label}: stopping…")

    def _show(self, run: Run) -> None:
        """Draw this run's progress and loss curve."""
        self._shown = weakref.ref(run)
        self.progress_bar.setMaximum(run.total_steps)
        self.progress_bar.setValue(run.done)
        self.progress_bar.setFormat(run.status())
        self.loss_plot.set_history(run.losses, run.stage_starts)
        self.status.setText(run.request.label)

    def _on_progress(self, run: Run, report: Progress) -> None:
        run.record(report)
        if report.preview is not None and self._alive(run.layer):
            k = report.slices_in_flight[0] if report.slices_in_flight else None  # a MAP batch previews its first
            L.update_preview(self.viewer, run.layer, run.request, report.preview, k)
        if run is self.shown:
            self.progress_bar.setValue(run.done)
            self.progress_bar.setFormat(run.status())
            self.loss_plot.set_history(run.losses, run.stage_starts)

    def _on_screened(self, run: Run, record: dict) -> None:
        """Before the solver starts: warn when the input scores out of distribution (the run goes on)."""
        text = L.ood_warning(run.request.label, record)
        if text is not None:
            run.warned_ood = True
            show_warning(text)

    def _on_measured(self, run: Run, zero_filled, sampled) -> None:
        """k-space: the zero-filled image is the first preview, and the sampling mask a layer beside the input."""
        if not self._alive(run.layer) or run.result is not None:
            return
        L.update_preview(self.viewer, run.layer, run.request, zero_filled)
        L.show_sampling_mask(self.viewer, run.layer, run.request, sampled)

    def _on_slice(self, run: Run, k: int, result) -> None:
        """A volume run finished slice k: into the layers, and the progress moves on."""
        run.finish_slice(k)
        run.layers.fill(k, result)
        if result.settings.get("prior_resolution"):
            self.resolutions[run.request.options["prior"]] = int(result.settings["prior_resolution"])
        if run is self.shown:
            self.progress_bar.setValue(run.done)
            self.status.setText(f"{run.request.label}: {run.finished}/{len(run.request.slices)} slices done")

    def _on_volume_returned(self, run: Run, result) -> None:
        """The layers keep what finished; a run with no finished slice leaves the viewer as it was."""
        L.remove_preview(self.viewer, run.request)
        self._update_factors()
        if not result.done:
            run.layers.drop()
            show_info(f"{run.request.label} cancelled before a slice finished: nothing was added")
            if run is self.shown:
                self.status.setText("cancelled: nothing added")
            return
        shown = run.layers.finish(result)
        names = [layer.name for layer in shown]
        show_info(V.notification(run.request, result, names))
        _note_detail(result.settings.get(result.done[0]) if result.done else None)
        bad = V.flagged(result)
        if bad:
            more = f" and {len(bad) - 1} more slices" if len(bad) > 1 else ""
            show_warning(L.ood_warning(f"{run.request.label} z{bad[0]}{more}", result.settings[bad[0]]
                                       .get("in_distribution"), partial=result.partial))
        if run is self.shown:
            done = f"{len(result.done)}/{len(result.slices)} slices in: "
            self.status.setText(("cancelled, partial: " if result.partial else "done: ") + done + ", ".join(names))

    def _on_returned(self, run: Run, result) -> None:
        run.result = result
        if run.volume:
            self._on_volume_returned(run, result)
            return
        if result.settings.get("prior_resolution"):
            self.resolutions[run.request.options["prior"]] = int(result.settings["prior_resolution"])
            self._update_factors()
        L.remove_preview(self.viewer, run.request)
        if not self._alive(run.layer):
            show_warning(f"{run.request.layer_name!r} was removed during the run; its results are dropped")
            return
        shown = L.show_results(self.viewer, run.layer, run.request, result)
        names = f"{run.request.label} " + ", ".join(layer.metadata["brgm"]["kind"] for layer in shown)
        interval = L.interval_record(result)
        if result.partial:
            show_info(f"Cancelled after {run.reports} steps; partial results in: {names}")
        else:
            show_info(f"{run.request.label} finished" + (f": {L.interval_summary(interval)}" if interval else ""))
        _note_detail(result.settings)
        ood = L.ood_warning(run.request.label, L.in_distribution_record(result), partial=result.partial)
        if ood is not None and not run.warned_ood:
            show_warning(ood)
        if run is self.shown:
            self.status.setText(("cancelled, partial: " if result.partial else "done: ") + names)

    def _on_errored(self, run: Run, exc: Exception) -> None:
        L.remove_preview(self.viewer, run.request)
        message = str(exc) if isinstance(exc, ValueError | CheckpointError) else f"{type(exc).__name__}: {exc}"
        kept = ""
        if run.layers is not None and run.layers.settings:  # never lose the finished slices
            shown = run.layers.finish(run.layers.collected())
            kept = f"; the {len(run.layers.settings)} finished slices are kept in: {', '.join(x.name for x in shown)}"
        elif run.layers is not None:
            run.layers.drop()
        show_error(f"Reconstruction of {run.request.label} failed: {message}{kept}")
        if run is self.shown:
            self.status.setText(f"failed: {message}")

    def _on_finished(self, run: Run) -> None:
        self.runs.pop(run.layer.unique_id, None)
        if run is self.shown:
            ended = "stopped" if run.stop.is_set() else "finished" if run.result is not None else "failed"
            self.progress_bar.setFormat(run.status(ended=ended))
        self._update_buttons()
        self.run_finished.emit(run)


def _note_detail(settings: dict | None) -> None:
    """A warning when the input was reduced to fit the prior (the result has at most its resolution)."""
    note = detail_lost((settings or {}).get("fit"))
    if note is not None:
        show_warning(note)


def _work(ref, engine):
    """A run's work in its worker thread (the run is in `ReconstructionWidget.runs` until it has finished)."""
    return ref()._work(engine)


def _nobody() -> None:
    return None


def _deleted(widget: QWidget) -> bool:
    """Whether the Qt side of a widget is gone (its Python wrapper outlives it while worker signals are queued)."""
    try:
        widget.objectName()
    except RuntimeError:
        return True
    return False


def _stop_all(runs: dict) -> None:
    """Stop every run in flight (the widget is going away; napari does not wait for workers)."""
    for run in runs.values():
        run.stop.set()


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox(toolTip=tip)
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def _set_choices(combo: QComboBox, names: list[str]) -> None:
    """Replace a combo box's items, keeping the current choice when it still exists."""
    current = combo.currentText()
    if [combo.itemText(i) for i in range(combo.count())] == names:
        return
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    combo.setCurrentIndex(max(combo.findText(current), 0) if names else -1)
    combo.blockSignals(False)


def _recent_checkpoints() -> list[str]:
    value = _settings().value("checkpoints", [])
    paths = [value] if isinstance(value, str) else list(value or [])
    return [p for p in paths if p]
