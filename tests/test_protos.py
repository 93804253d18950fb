"""The committed stubs in etude/v1 are exactly what `make protos` generates from protos/."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    protos = sorted(str(path.relative_to(ROOT / "protos")) for path in (ROOT / "protos").rglob("*.proto"))
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--descriptor_set_out={tmp_path / 'etude' / 'v1' / 'etude.protoset'}",
            "--include_source_info",
            *(str(ROOT / "protos" / proto) for proto in protos),
        ]
    )
    assert status == 0
    generated = {path.relative_to(tmp_path): path.read_text() for path in tmp_path.rglob("*_pb2*")}
    committed = {path.relative_to(ROOT): path.read_text() for path in (ROOT / "etude" / "v1").glob("*_pb2*")}
    assert sorted(map(str, generated)) == sorted(map(str, committed)), "run `make protos`"
    stale = [str(path) for path, text in generated.items() if committed[path] != text]
    assert not stale, f"stubs out of date, run `make protos`: {stale}"
    protoset = Path("etude") / "v1" / "etude.protoset"
    assert (ROOT / protoset).read_bytes() == (tmp_path / protoset).read_bytes(), "run `make protos`"


def test_reflection_serves_every_etude_proto_with_its_comments() -> None:
    from etude.reflection import load_documented_files

    documented = load_documented_files()
    protos = {str(path.relative_to(ROOT / "protos")) for path in (ROOT / "protos").rglob("*.proto")}
    assert set(documented) == protos
    for file in documented.values():
        assert any(location.leading_comments for location in file.source_code_info.location), file.name
