from __future__ import annotations

import struct

from tests.conftest import rule_ids, scan_data


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


BOOSTER = b"cxgboost.core\nBooster\n"


def test_construct_only_class_rebuilt_with_new_is_clean() -> None:
    # what pickle writes for a Booster: copyreg.__newobj__(cls) / NEWOBJ, then BUILD with the model bytes
    via_copyreg = b"\x80\x02ccopyreg\n__newobj__\n" + BOOSTER + b"\x85R}" + _s("handle") + b"Nsb."
    via_newobj = b"\x80\x02" + BOOSTER + b")\x81}" + _s("handle") + b"Nsb."
    for data in (via_copyreg, via_newobj):
        assert "PICKLE-DANGEROUS-CALL" not in rule_ids(scan_data(data, "b.pkl")[1])


def test_construct_only_class_called_directly_is_flagged() -> None:
    direct = b"\x80\x02" + BOOSTER + b"(NN" + _s("/etc/hostname") + b"tR."
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan_data(direct, "b.pkl")[1])
    # _reconstructor(cls, base, state) runs base.__init__: the base counts as called
    recon = b"\x80\x02ccopyreg\n_reconstructor\n(" + BOOSTER + BOOSTER + b"Nt" + b"R."
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan_data(recon, "b.pkl")[1])
    # ... but its class argument only gets __new__
    recon_ok = b"\x80\x02ccopyreg\n_reconstructor\n(" + BOOSTER + b"cbuiltins\nobject\nNtR."
    assert "PICKLE-DANGEROUS-CALL" not in rule_ids(scan_data(recon_ok, "b.pkl")[1])


def test_pandas_dateutil_zone_path_flagged_plain_zone_clean() -> None:
    def tz(zone: str) -> bytes:
        return b"\x80\x02cpandas\nDatetimeTZDtype\n" + _s("ns") + _s(zone) + b"\x86R."
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan_data(tz("dateutil//etc/hostname"), "t.pkl")[1])
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan_data(tz("dateutil/../../etc/hostname"), "t.pkl")[1])
    assert "PICKLE-DANGEROUS-CALL" not in rule_ids(scan_data(tz("dateutil/Europe/Paris"), "t.pkl")[1])
