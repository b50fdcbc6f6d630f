"""`pyctl report`, read as counsel reads it: rendered by headless Chromium to PDF, then
the printed text (pdftotext) and the printed colours (pdftoppm) are checked. Chromium and
poppler-utils are required, not optional: .ci/run installs them, and a test fails (never
skips) without them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import Db, hold, restrict
from pyctl.cli import main
from pyctl.cluster import Cluster, copy_of

CASE = "2026-CV-118"


def cli(db: Db, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install chromium poppler-utils fonts-dejavu-core (.ci/run does)")
    return found


def print_to_pdf(html: Path) -> Path:
    """The report as a reader prints it: headless Chromium's --print-to-pdf, offline."""
    pdf = html.with_suffix(".pdf")
    profile = html.parent / f".chromium-{html.stem}"
    args = [tool("chromium"), "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
            "--no-pdf-header-footer", "--proxy-server=127.0.0.1:9", f"--print-to-pdf={pdf}", html.as_uri()]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0 and pdf.exists() and pdf.stat().st_size > 0, proc.stderr[-2000:]
    shutil.rmtree(profile, ignore_errors=True)
    return pdf


def printed_text(pdf: Path) -> str:
    """The text a reader sees, its white space (line breaks inside table cells) made single spaces."""
    proc = subprocess.run([tool("pdftotext"), "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True)
    return " ".join(proc.stdout.split())


def squeezed(text: str) -> str:
    """The printed text without white space: a digest wrapped over two lines is found whole."""
    return re.sub(r"\s+", "", text)


def red_pixels(pdf: Path, page: int = 1) -> int:
    """How many clearly red pixels a page has, rendered by pdftoppm (PPM, parsed here)."""
    proc = subprocess.run([tool("pdftoppm"), "-f", str(page), "-l", str(page), "-r", "40", str(pdf)],
                          capture_output=True, check=True)
    data = proc.stdout
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval, separated by white space (no comments from pdftoppm)
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    assert fields[0] == b"P6"
    width, height = int(fields[1]), int(fields[2])
    pixels = data[pos + 1:pos + 1 + width * height * 3]
    return sum(1 for i in range(0, len(pixels), 3) if pixels[i] > 170 and pixels[i + 1] < 70 and pixels[i + 2] < 70)


@pytest.fixture
def primary(db: Db) -> Db:
    """The test database plays the primary. (It is a clone of a template, which the toolkit rightly
    calls an unsynced copy, and the report says so in red on its first page.)"""
    db.su.execute("update privacy.settings set value = privacy.database_identity() where name = 'database_identity'")
    return db


def report(db: Db, tmp_path: Path, *args: str, name: str = "report.html", user: str = "steward_user") -> Path:
    out = tmp_path / name
    result = cli(db, "report", "--out", str(out), *args, user=user)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out


def a_restriction_through_its_lifecycle(db: Db) -> str:
    cli(db, "recipient", "add", "salesforce", "--description", "CRM sync")
    rid = restrict(db, 2, "accuracy")
    placed_seq = db.scalar("select seq from privacy.ledger where restriction_id = %s and event = 'restriction_placed'", (rid,))
    assert cli(db, "recipient", "ack", "salesforce", str(placed_seq)).exit_code == 0
    assert cli(db, "restrict", "verify", rid, "--note", "address checked against a utility bill").exit_code == 0
    assert cli(db, "restrict", "notify", rid, "--via", "email to ben@example.com").exit_code == 0
    return rid


def test_the_printed_report_states_the_case_the_digests_and_the_verdicts(primary: Db, tmp_path: Path) -> None:
    db = primary
    hold_id = hold(db, 3, CASE)
    exported = cli(db, "--json", "export", "3", "--out", str(tmp_path / "customer-3"))
    assert exported.exit_code == 0, exported.output
    manifest_sha = json.loads(exported.stdout)["exports"][0]["manifest_sha256"]
    rid = a_restriction_through_its_lifecycle(db)

    html = report(db, tmp_path)
    text = printed_text(print_to_pdf(html))
    flat = squeezed(text)

    # the case, the subject, who placed it and why
    assert f"case {CASE}" in text and "customer/3" in text and hold_id in flat
    assert "steward_user" in text and "preserve" in text
    # every digest taken at placement, and the verdict of verifying it now
    digests = db.su.execute("select digest from privacy.hold_digests where hold_id = %s", (hold_id,)).fetchall()
    assert len(digests) == 6
    for (digest,) in digests:
        assert digest in flat
    assert "unchanged" in text and "VIOLATION" not in text
    # the export made under the hold, by the hash of its manifest
    assert manifest_sha in flat
    # the ledger head and the chain's verdict
    head_seq, head_hash = db.su.execute("select seq, encode(hash, 'hex') from privacy.ledger order by seq desc limit 1").fetchone()
    assert head_hash in flat and f"entry {head_seq}" in text
    assert "the hash chain verifies" in text
    # the restriction: basis, each lifecycle step with its evidence, the recipient told, what is missing
    assert rid in flat and "Art. 18(1)(a)" in text
    assert "address checked against a utility bill" in text and "email to ben@example.com" in text
    assert "salesforce" in text and "PENDING" not in text.split("salesforce")[1][:200]
    assert "before release still required: approve" in text
    # the database: coverage and doctor
    assert "public.orders" in text and "installed" in text
    # how a reader checks all of it, in plain words
    for how in ("pyctl ledger verify", "pyctl hold verify", "sha256sum -c SHA256SUMS", "pyctl export verify"):
        assert how in text, how
    # the timeline is drawn, and nothing on the first page is red
    assert "Timeline" in text
    assert red_pixels(html.with_suffix(".pdf")) == 0


def test_a_hold_whose_data_a_superuser_altered_prints_as_a_violation_in_words_and_colour(primary: Db, tmp_path: Path) -> None:
    db = primary
    hold_id = hold(db, 3, CASE)
    db.su.execute("alter table orders disable trigger \"Privacy_check_update\"")
    db.su.execute("update orders set total = 1 where id = 30")
    db.su.execute("alter table orders enable trigger \"Privacy_check_update\"")

    pdf = print_to_pdf(report(db, tmp_path))
    text = printed_text(pdf)
    assert "VIOLATION" in text
    assert "data under this legal hold was changed or deleted" in text
    assert "public.orders_2026" in text or "public.orders" in text
    assert '{"id":30,"placed_on":"2026-03-30"}' in squeezed(text)
    assert hold_id in squeezed(text)
    # in colour: the summary and the timeline on the first page show it in red
    assert red_pixels(pdf) > 50

    facts = json.loads(cli(db, "report", "--out", "-", "--format", "json").stdout)
    assert facts["holds"][0]["verification"]["verdict"] == "violation"
    assert facts["summary"]["holds_violated"] == 1


def test_the_json_form_carries_the_same_facts(db: Db, tmp_path: Path) -> None:
    hold_id = hold(db, 3, CASE)
    rid = a_restriction_through_its_lifecycle(db)
    out = tmp_path / "report.json"
    result = cli(db, "--json", "report", "--out", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["path"] == str(out)
    import hashlib
    assert summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    facts = json.loads(out.read_text(encoding="utf-8"))
    assert facts["kind"] == "pyctl report" and facts["report_version"] == 1
    (h,) = facts["holds"]
    assert h["id"] == hold_id and h["case"] == CASE and h["subject_key"] == "3" and h["state"] == "active"
    assert h["verification"]["verdict"] == "unchanged"
    digests = dict(db.su.execute("select privacy.qualified(table_schema, table_name), digest from privacy.hold_digests "
                                 "where hold_id = %s", (hold_id,)).fetchall())
    assert {d["table"]: d["sha256"] for d in h["digests"]} == digests
    assert all(d["matches_ledger"] for d in h["digests"])
    assert [e["event"] for e in h["events"]] == ["hold_placed", "hold_digested"]
    (r,) = facts["restrictions"]
    assert r["id"] == rid and r["basis"] == "accuracy" and r["missing_steps"] == ["approve"]
    assert [s["step"] for s in r["steps"] if s["at"]] == ["verify", "notify"]
    assert [(n["recipient"], n["acked_at"] is not None) for n in r["recipients"]] == [("salesforce", True)]
    head = db.su.execute("select seq, encode(hash, 'hex') from privacy.ledger order by seq desc limit 1").fetchone()
    assert (facts["ledger"]["head"]["seq"], facts["ledger"]["head"]["hash"]) == head
    assert facts["ledger"]["verifies"] is True
    assert {t["table"] for t in facts["coverage"]["protected"]} >= {"public.orders", "public.customers"}
    # the HTML states every digest the JSON does
    html = report(db, tmp_path).read_text(encoding="utf-8")
    for d in h["digests"]:
        assert d["sha256"] in html


def test_filters_case_subject_since(db: Db, tmp_path: Path) -> None:
    hold(db, 3, CASE)
    hold(db, 1, "2026-CV-999")
    restrict(db, 3, "objection")
    restrict(db, 2, "accuracy")

    def facts(*args: str) -> dict[str, Any]:
        result = cli(db, "report", "--out", "-", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    every = facts()
    assert len(every["holds"]) == 2 and len(every["restrictions"]) == 2
    case = facts("--case", CASE)
    assert [h["case"] for h in case["holds"]] == [CASE]
    assert [r["subject_key"] for r in case["restrictions"]] == ["3"]  # restrictions on the case's subjects
    one = facts("--subject", "customer", "2")
    assert one["holds"] == [] and [r["subject_key"] for r in one["restrictions"]] == ["2"]
    assert one["filters"]["subject"] == "customer/2"
    later = facts("--since", "2999-01-01")
    assert len(later["holds"]) == 2  # in force, so in force since any date
    released = every["holds"][1]["id"]
    assert cli(db, "hold", "release", released, "--reason", "settled", "--reference", "order 1").exit_code == 0
    assert [h["id"] for h in facts("--since", "2999-01-01")["holds"]] == [every["holds"][0]["id"]]
    assert [h["state"] for h in facts()["holds"]] == ["active", "released"]
    bad = cli(db, "report", "--out", "-", "--subject", "nobody", "1")
    assert bad.exit_code == 1 and "unknown subject type" in bad.output


def test_fleet_copies_show_whether_they_have_each_hold_and_no_password(cluster: Cluster, primary: Db, tmp_path: Path) -> None:
    db = primary
    fork = copy_of(cluster, follower=True)
    try:
        fork.promote()
        hold_id = hold(db, 3, CASE)  # after the fork was taken: the fork does not have it
        assert cli(db, "fleet", "add", "staging", "--dsn", fork.dsn(db.name, user="shop_owner"), "--kind", "fork").exit_code == 0
        here = db.dsn("steward_user") + " password=SekretPassw0rd"
        assert cli(db, "fleet", "add", "mirror", "--dsn", here, "--kind", "backup").exit_code == 0
        assert cli(db, "fleet", "add", "gone", "--dsn", "host=127.0.0.1 port=9 dbname=x user=u password=AlsoSekret",
                    "--kind", "backup").exit_code == 0
        out = report(db, tmp_path)
        facts = json.loads(cli(db, "report", "--out", "-", "--format", "json").stdout)
        for text in (out.read_text(encoding="utf-8"), json.dumps(facts)):
            assert "SekretPassw0rd" not in text and "AlsoSekret" not in text
        states = {c["name"]: c["state"] for c in facts["holds"][0]["fleet"]}
        assert states == {"staging": "not synced", "mirror": "synced", "gone": "unknown"}
        assert {c["name"]: c["reachable"] for c in facts["fleet"]} == {"staging": True, "mirror": True, "gone": False}
        text = printed_text(print_to_pdf(out))
        assert "not synced" in text.lower() and "UNREACHABLE" in text and hold_id in squeezed(text)
        # after a sync the fork has it
        synced = cli(db, "sync", "staging")
        assert synced.exit_code == 0, synced.output
        facts = json.loads(cli(db, "report", "--out", "-", "--format", "json", "--no-fleet").stdout)
        assert {c["state"] for c in facts["holds"][0]["fleet"]} == {"unknown"}
        facts = json.loads(cli(db, "report", "--out", "-", "--format", "json").stdout)
        assert {c["name"]: c["state"] for c in facts["holds"][0]["fleet"]}["staging"] == "synced"
    finally:
        fork.destroy()


def test_self_contained_and_escaped(db: Db, tmp_path: Path) -> None:
    db.scalar("select privacy.place_hold('customer', '3', %s, %s)",
              ('<img src="http://evil.example/x.png">', "<script>alert(1)</script> & more"), user="steward_user")
    html = report(db, tmp_path).read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    # no external asset: nothing to fetch (the SVG namespace is a name, not a fetch)
    assert not re.search(r"""<[a-zA-Z][^>]*\s(src|href)\s*=|@import|url\(|<link|<script""", html)
    assert re.findall(r"""=\s*["']?(https?://[^"'\s>]*)""", html) == ["http://www.w3.org/2000/svg"]


def test_only_stewards_and_the_owner_make_a_report(db: Db, tmp_path: Path) -> None:
    result = cli(db, "report", "--out", str(tmp_path / "r.html"), user="app")
    assert result.exit_code == 1 and "run it as a steward" in result.output
    assert not (tmp_path / "r.html").exists()
    report(db, tmp_path, user="shop_owner")


def test_render_time_for_many_holds(db: Db, tmp_path: Path) -> None:
    """A measured number: a report over 20 holds and 5 restrictions (the README has 200 and 50; placing
    them is what takes long, not the report)."""
    db.steward.execute("select privacy.place_hold('customer', (1 + g % 4)::text, 'CASE-' || g, 'preserve') "
                       "from generate_series(1, 20) g")
    db.steward.execute("select privacy.place_restriction('customer', (1 + g % 4)::text, 'objection', 'objects') "
                       "from generate_series(1, 5) g")
    started = time.monotonic()
    out = report(db, tmp_path)
    elapsed = time.monotonic() - started
    started = time.monotonic()
    pdf = print_to_pdf(out)
    printed = time.monotonic() - started
    info = subprocess.run([tool("pdfinfo"), str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = re.search(r"Pages:\s+(\d+)", info)
    print(f"\nreport of 20 holds, 5 restrictions: {elapsed:.1f} s, {out.stat().st_size / 1e6:.1f} MB html; "
          f"printed in {printed:.1f} s, {pages[1] if pages else '?'} pages")
    assert elapsed < 30
    assert len(json.loads(cli(db, "report", "--out", "-", "--format", "json").stdout)["holds"]) == 20


def test_bad_input_is_one_line_and_writes_nothing(db: Db, tmp_path: Path) -> None:
    hold(db, 3, CASE)
    (tmp_path / "a-directory").mkdir()
    cases = [
        (["--out", str(tmp_path / "a-directory")], 1, "is a directory"),
        (["--out", str(tmp_path / "missing" / "r.html")], 1, "No such file or directory"),
        (["--out", str(tmp_path / "r.html"), "--subject", "customer", "not-a-number"], 1, "is not a valid customer key"),
        (["--out", str(tmp_path / "r.html"), "--since", "yesterday"], 2, "Invalid value for '--since'"),
        (["--out", str(tmp_path / "r.html"), "--format", "pdf"], 2, "Invalid value for '--format'"),
        (["--format", "json"], 2, "Missing option '--out'"),
    ]
    for args, code, message in cases:
        result = CliRunner().invoke(main, ["--dsn", db.dsn("steward_user"), "report", *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        if code == 1:
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]
    assert list((tmp_path / "a-directory").iterdir()) == []
    # a case that does not exist is an empty report, not an error
    facts = json.loads(cli(db, "report", "--out", "-", "--format", "json", "--case", "'; drop table customers; --").stdout)
    assert facts["holds"] == [] and facts["restrictions"] == []
