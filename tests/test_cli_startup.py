"""``dcsim run`` starts with the cyclic garbage collector off and leaves it as it found it: on
after a run and after bad input, with nothing left frozen once the command is over."""

import gc

from sim.cli.main import main


def test_collector_back_on_after_a_run_and_after_bad_input(tmp_path, capsys):
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert main(["run", "vidur_reference", "--out", str(tmp_path / "bad"), "--set", "duration_s=-1"]) == 2
    assert "duration_s" in capsys.readouterr().err
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # refused: nothing frozen, collected as usual
    assert main(["run", "vidur_reference", "--out", str(tmp_path / "ok"), "--set", "duration_s=2", "-q"]) == 0
    assert gc.isenabled() and (tmp_path / "ok" / "summary.parquet").is_file()
    assert gc.get_freeze_count() == frozen  # frozen for the command only
    gc.disable()
    try:  # a caller that had it off finds it off
        assert main(["run", "vidur_reference", "--out", str(tmp_path / "off"), "--set", "duration_s=2", "-q"]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
