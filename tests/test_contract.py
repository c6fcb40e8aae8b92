"""The report contract: every graceid form, sites, projects, revisions, subdirs, names."""

from __future__ import annotations

import pytest

from dqrxfer import contract
from dqrxfer.contract import ContractError

VALID_GRACEIDS = [
    "S230518h",
    "S230518ab",
    "S230518abc",
    "TS230518h",
    "MS230518zz",
    "GW230518A",
    "GW230518AB",
    "TGW230518A",
    "MGW230518ABC",
    "G123456",
    "G1234",
    "E123456",
    "H12345",
    "M99999",
    "T1234567",
    "1368449966.167",
    "999999999.000",
]
INVALID_GRACEIDS = [
    "",
    "S23051h",
    "S2305180h",
    "S230518H",
    "s230518h",
    "XS230518h",
    "S230518",
    "GW230518a",
    "GW23051A",
    "G123",
    "X123456",
    "g123456",
    "1368449966.16",
    "1368449966.1670",
    "136844996.167x",
    "12345678.123",
    "S230518h/../x",
    "G١٢٣٤",
    "S２３０５１８h",
    "1368449966.١٦٧",
    "S230518h\n",
    " S230518h",
    "G123456_dir",
]


@pytest.mark.parametrize("graceid", VALID_GRACEIDS)
def test_valid_graceids(graceid: str) -> None:
    assert contract.validate_graceid(graceid) == graceid


@pytest.mark.parametrize("graceid", INVALID_GRACEIDS)
def test_invalid_graceids_name_the_field(graceid: str) -> None:
    with pytest.raises(ContractError) as raised:
        contract.validate_graceid(graceid)
    assert raised.value.field == "graceid"
    assert str(raised.value).startswith("graceid: must be")


@pytest.mark.parametrize(
    ("graceid", "form"),
    [
        ("S230518h", "superevent"),
        ("GW230518A", "confirmed event"),
        ("G1234", "event"),
        ("1368449966.167", "GPS time"),
    ],
)
def test_graceid_forms(graceid: str, form: str) -> None:
    assert contract.graceid_form(graceid) == form


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("llo", "llo"),
        ("LLO", "llo"),
        ("LHO", "lho"),
        ("Virgo", "virgo"),
        ("EGO", "virgo"),
        ("ego", "virgo"),
        ("Kagra", "kagra"),
        ("KAGRA", "kagra"),
    ],
)
def test_sites_case_insensitive_and_legacy(given: str, canonical: str) -> None:
    assert contract.validate_site(given) == canonical


@pytest.mark.parametrize("site", ["", "cit", "geo", "llo1", "l lo"])
def test_unknown_sites(site: str) -> None:
    with pytest.raises(ContractError, match="^uploader: must be one of kagra, lho, llo, virgo"):
        contract.validate_site(site)


def test_configured_sites_extend_the_list() -> None:
    assert contract.validate_site("CIT", sites=("llo", "cit")) == "cit"


@pytest.mark.parametrize(
    ("given", "canonical"), [("o4", "O4"), ("mdc", "MDC"), ("Replay", "replay")]
)
def test_projects_keep_configured_spelling(given: str, canonical: str) -> None:
    assert contract.validate_project(given) == canonical


def test_unknown_project() -> None:
    with pytest.raises(ContractError, match="^project: must be one of"):
        contract.validate_project("O5")


@pytest.mark.parametrize(
    ("given", "number"), [("0", 0), ("1", 1), ("42", 42), ("999999999", 999999999), (7, 7)]
)
def test_valid_revisions(given: str | int, number: int) -> None:
    assert contract.validate_revision(given) == number


@pytest.mark.parametrize(
    "given", ["", "-1", "1.0", "1e3", "one", " 1", "1000000000", "0x10", "١", -1, True]
)
def test_invalid_revisions(given: object) -> None:
    with pytest.raises(ContractError, match="^revision: must be a non-negative integer"):
        contract.validate_revision(given)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        (None, ""),
        ("", ""),
        ("tier1", "tier1"),
        ("tier1/plots", "tier1/plots"),
        ("tier1/", "tier1"),
        ("données", "données"),
    ],
)
def test_valid_subdirs(given: str | None, normalised: str) -> None:
    assert contract.validate_subdir(given) == normalised


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("..", "'..'"),
        ("a/../b", "'..'"),
        ("../x", "'..'"),
        ("/abs", "relative"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a\tb", "control"),
        ("a\\b", "'\\\\'"),
        (".hidden", "start with '.'"),
        ("x/" * 17, "levels"),
        ("a" * 1025, "1024 characters"),
    ],
)
def test_invalid_subdirs_name_field_and_rule(given: str, rule: str) -> None:
    with pytest.raises(ContractError, match=f"^subdir: .*{rule}"):
        contract.validate_subdir(given)


@pytest.mark.parametrize("name", ["index.html", "data.json", "plot 1.png", "résumé.txt", "a" * 255])
def test_valid_filenames(name: str) -> None:
    assert contract.validate_filename(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "/etc", ".htaccess", "a\x00", "a\rb", "é" * 128]
)
def test_invalid_filenames(name: str) -> None:
    with pytest.raises(ContractError, match="^filename: "):
        contract.validate_filename(name)


def test_sha256_normalised_and_checked() -> None:
    assert contract.validate_sha256("AB" * 32) == "ab" * 32
    assert contract.validate_sha256(None) is None
    with pytest.raises(ContractError, match="^sha256: must be 64 hexadecimal"):
        contract.validate_sha256("ab" * 31)


def test_kind() -> None:
    assert contract.validate_kind("tar") == "tar"
    with pytest.raises(ContractError, match="^kind: must be one of file, tar"):
        contract.validate_kind("zip")


def good_metadata(**changes: str) -> dict[str, str]:
    metadata = {
        "project": "O4",
        "graceid": "S230518h",
        "uploader": "LLO",
        "revision": "3",
        "filename": "index.html",
        "kind": "file",
    }
    metadata.update(changes)
    return metadata


def test_validate_metadata_round_trip() -> None:
    upload = contract.validate_metadata(good_metadata(subdir="tier1"))
    assert upload.site == "llo"
    assert upload.revision == 3
    assert upload.report_relpath == "S230518h_dir/S230518h_llo_3"
    assert contract.validate_metadata(upload.to_metadata()) == upload


@pytest.mark.parametrize(
    "missing", ["project", "graceid", "uploader", "revision", "filename", "kind"]
)
def test_missing_required_key(missing: str) -> None:
    metadata = good_metadata()
    del metadata[missing]
    with pytest.raises(ContractError, match=f"^{missing}: is required"):
        contract.validate_metadata(metadata)


def test_report_directory_names_round_trip() -> None:
    assert contract.event_dirname("G123456") == "G123456_dir"
    assert contract.report_dirname("1368449966.167", "virgo", 2) == "1368449966.167_virgo_2"
    assert contract.parse_report_dirname("S230518ab_kagra_12") == ("S230518ab", "kagra", 12)
    with pytest.raises(ContractError):
        contract.parse_report_dirname("S230518ab_cit_1")


def test_contract_does_not_import_flask() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dqrxfer.contract; "
        "sys.exit('flask' in sys.modules or 'sqlalchemy' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
