"""The flags every `etude serve` shares refuse what they cannot mean, with the allowed values."""

from __future__ import annotations

import pytest
from etude.services.cli import main as etude_main


def test_an_unknown_log_level_is_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        etude_main(["serve", "workload", "--log-level", "verbose"])
    assert refused.value.code == 2
    assert "invalid choice: 'verbose'" in capsys.readouterr().err
