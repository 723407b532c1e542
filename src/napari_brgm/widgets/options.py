"""The widget's "Advanced" group: controls for the options of the chosen task and method, built from their dataclasses.

Each field of an options dataclass (`engine.options`) becomes a row named after it, with its help
as tooltip: a check box for a bool, a combo box for a field with choices, a spin box for an int,
a line edit otherwise (empty: None). An option added to a dataclass appears here by itself.
"""

from __future__ import annotations

from collections.abc import Collection

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QSpinBox, QToolButton, QVBoxLayout, QWidget

from napari_brgm.engine.options import OptionInfo, Options, describe

INT_MAX = 2**31 - 1


class AdvancedOptions(QWidget):
    """A collapsible group (closed at first): one row per option of the chosen task, then of the chosen method.

    `values()` are the options set to something else than their default, so an untouched group
    adds nothing to a run.
    """

    SECTIONS = ("task", "method")  # the order of the rows

    def __init__(self):
        super().__init__()
        self.toggle = QToolButton(text="Advanced", checkable=True, autoRaise=True,
                                  toolTip="The options of the chosen task and method (docs/engine.md)")
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.body = QWidget(visible=False)
        self._form = QFormLayout(self.body)
        self._form.setContentsMargins(12, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.toggle.toggled.connect(self._on_toggled)
        self.controls: dict[str, QWidget] = {}
        self._infos: dict[str, OptionInfo] = {}
        self._texts: dict[str, str] = {}  # a line edit's initial text: unchanged, it stands for the exact default
        self._sections: dict[str, list[str]] = {section: [] for section in self.SECTIONS}

    def _on_toggled(self, expanded: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)

    def show_options(self, section: str, cls: type[Options], hidden: Collection[str] = ()) -> None:
        """The rows of `section` ("task" or "method") for the fields of `cls` except `hidden`.

        Values the user changed carry over to a field of the same name (one Restarts for CSGM and DIP).
        """
        carried = self.values(skip_invalid=True)
        for name in self._sections[section]:
            self._form.removeRow(self.controls.pop(name))
            del self._infos[name]
            self._texts.pop(name, None)
        row = sum(len(self._sections[s]) for s in self.SECTIONS[:self.SECTIONS.index(section)])
        self._sections[section] = [info.name for info in describe(cls) if info.name not in hidden]
        for info in describe(cls):
            if info.name in hidden:
                continue
            self.controls[info.name] = control = self._control(info)
            self._infos[info.name] = info
            self._form.insertRow(row, info.name, control)
            row += 1
            if info.name in carried:
                try:
                    self.set_value(info.name, carried[info.name])
                except ValueError:  # not a choice of the new field
                    continue

    def _control(self, info: OptionInfo) -> QWidget:
        allowed = f"; allowed: {info.allowed_text}" if info.allowed_text and info.choices is None else ""
        tip = f"{info.help} (default {info.default_text}{allowed})"
        if info.type is bool:
            return QCheckBox(checked=bool(info.default), toolTip=tip)
        if info.choices is not None:
            combo = QComboBox(toolTip=tip)
            for choice in info.choices:
                combo.addItem("default" if choice is None else str(choice), choice)
            combo.setCurrentIndex(combo.findData(info.default))
            return combo
        if info.type is int and not info.optional:
            spin = QSpinBox(toolTip=tip)
            spin.setRange(-INT_MAX if info.minimum is None else int(info.minimum), INT_MAX)
            spin.setValue(info.default)
            return spin
        text = "" if info.default is None else info.default_text
        self._texts[info.name] = text
        return QLineEdit(text, toolTip=tip, placeholderText="default")

    def set_value(self, name: str, value) -> None:
        control, info = self.controls[name], self._infos[name]
        if isinstance(control, QCheckBox):
            control.setChecked(bool(value))
        elif isinstance(control, QComboBox):
            if control.findData(value) < 0:
                raise ValueError(f"{name} must be one of {info.choices}, got {value!r}")
            control.setCurrentIndex(control.findData(value))
        elif isinstance(control, QSpinBox):
            control.setValue(int(value))
        else:
            control.setText(self._texts[name] if value == info.default else "" if value is None else str(value))

    def value(self, name: str):
        """The option's value; ValueError with the option's name for text that is not a number."""
        control, info = self.controls[name], self._infos[name]
        if isinstance(control, QCheckBox):
            return control.isChecked()
        if isinstance(control, QComboBox):
            return control.currentData()
        if isinstance(control, QSpinBox):
            return control.value()
        text = control.text().strip()
        if text == self._texts[name]:
            return info.default
        if not text:
            if info.optional:
                return None
            raise ValueError(f"{name} needs a value (default {info.default_text})")
        try:
            return info.type(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None

    def values(self, skip_invalid: bool = False) -> dict:
        """The options whose control differs from the default (a number that does not parse: ValueError or skipped)."""
        out = {}
        for name, info in self._infos.items():
            try:
                value = self.value(name)
            except ValueError:
                if skip_invalid:
                    continue
                raise
            if value != info.default:
                out[name] = value
        return out
