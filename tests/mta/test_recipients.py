"""The recipient table: mailboxes, aliases, catch-alls, subaddresses, its file and its
reloads; and its configuration keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.config import MtaConfig
from smtpx.mta.recipients import Broken, Deliver, RecipientTable, Unknown
from smtpx.protocol.addresses import Address

DOMAINS = ("example.org", "example.com")


def table(**kwargs: object) -> RecipientTable:
    return RecipientTable(DOMAINS, **kwargs)  # type: ignore[arg-type]


def targets(found: object) -> list[str]:
    assert isinstance(found, Deliver), found
    return [str(a) for a in found.targets]


def resolve(t: RecipientTable, address: str) -> object:
    return t.resolve(Address.parse(address))


def test_no_entries_accept_every_local_part() -> None:
    t = table()
    assert not t.enabled
    assert targets(resolve(t, "anyone@example.org")) == ["anyone@example.org"]


def test_mailboxes_aliases_and_unknown_users() -> None:
    t = table(
        mailboxes=["postmaster", "alice", "dave@example.com"],
        aliases={"bob": ["alice"], "info": ["alice", "carol@example.net"]},
    )
    assert targets(resolve(t, "Alice@Example.ORG")) == ["Alice@Example.ORG"]
    assert targets(resolve(t, "bob@example.org")) == ["alice@example.org"]
    found = resolve(t, "info@example.com")
    assert targets(found) == ["alice@example.com", "carol@example.net"]
    assert isinstance(found, Deliver) and found.expanded
    # a mailbox of one domain only
    assert targets(resolve(t, "dave@example.com")) == ["dave@example.com"]
    unknown = resolve(t, "dave@example.org")
    assert isinstance(unknown, Unknown)
    assert str(unknown.reply) == "550 5.1.1 Recipient address rejected: User unknown"
    # postmaster is always taken (RFC 5321 4.5.1), listed or not
    assert targets(resolve(table(mailboxes=["alice"]), "postmaster@example.org")) == [
        "postmaster@example.org"
    ]


def test_subaddresses_keep_their_tag_for_a_mailbox() -> None:
    t = table(mailboxes=["alice", "a+b"], aliases={"bob": ["alice"]})
    assert targets(resolve(t, "alice+lists@example.org")) == ["alice+lists@example.org"]
    assert targets(resolve(t, "bob+x@example.org")) == ["alice@example.org"]
    assert t.mailbox("alice+lists@example.org") == "alice@example.org"
    assert t.mailbox("a+b@example.org") == "a+b@example.org"  # a mailbox of its own
    assert isinstance(resolve(t, "carol+x@example.org"), Unknown)
    plain = table(mailboxes=["alice"], delimiter="")
    assert isinstance(resolve(plain, "alice+x@example.org"), Unknown)
    assert plain.mailbox("alice+x@example.org") == "alice+x@example.org"


def test_catch_alls_per_domain_and_everywhere() -> None:
    t = table(
        mailboxes=["alice", "bob"],
        aliases={"@example.com": ["bob"]},
        catch_all=["alice"],
    )
    assert targets(resolve(t, "nobody@example.com")) == ["bob@example.com"]
    assert targets(resolve(t, "nobody@example.org")) == ["alice@example.org"]
    assert targets(resolve(t, "bob@example.org")) == ["bob@example.org"]


def test_nested_aliases_self_reference_duplicates_and_loops() -> None:
    t = table(
        mailboxes=["alice", "carol"],
        aliases={
            "team": ["staff", "alice"],
            "staff": ["alice", "carol"],
            "alice": ["alice", "alice@example.net"],  # keep a copy, forward one
            "loop1": ["loop2"],
            "loop2": ["loop1"],
            "typo": ["alcie"],
        },
    )
    assert targets(resolve(t, "team@example.org")) == [
        "alice@example.org",
        "alice@example.net",
        "carol@example.org",
    ]
    assert targets(resolve(t, "alice@example.org")) == ["alice@example.org", "alice@example.net"]
    loop = resolve(t, "loop1@example.org")
    assert isinstance(loop, Broken) and "loop" in loop.why
    assert str(loop.reply).startswith("451 4.3.5 ")
    typo = resolve(t, "typo@example.org")
    assert isinstance(typo, Broken) and "alcie@example.org" in typo.why


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "recipients"
    path.write_text("# users\nalice\nbob: alice\n\n@example.com: alice\n")
    t = RecipientTable(DOMAINS, mailboxes=["dave"], file=path, clock=lambda: now[0])
    assert targets(resolve(t, "bob@example.org")) == ["alice@example.org"]
    assert targets(resolve(t, "dave@example.org")) == ["dave@example.org"]  # config + file
    assert isinstance(resolve(t, "eve@example.org"), Unknown)
    path.write_text("alice\neve\n")
    os.utime(path, ns=(1, 10**18))  # another modification time, whatever the clock says
    assert isinstance(resolve(t, "eve@example.org"), Unknown)  # not looked at yet
    now[0] = 1.5
    assert targets(resolve(t, "eve@example.org")) == ["eve@example.org"]
    assert isinstance(resolve(t, "bob@example.org"), Unknown)
    # a broken file is logged and the table in use stays; reload() says why
    path.write_text("alice\nbob: \n")
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] = 3.0
    assert not t.check_file()
    assert targets(resolve(t, "eve@example.org")) == ["eve@example.org"]
    with pytest.raises(ConfigError, match=r"recipients: line 2: the alias .bob. has no target"):
        t.reload()
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read the recipients file"):
        t.reload()
    assert targets(resolve(t, "eve@example.org")) == ["eve@example.org"]


def test_a_bad_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "recipients"
    path.write_text("alice\nbob: al ice@ @\n")
    with pytest.raises(ConfigError, match="line 2"):
        RecipientTable(DOMAINS, file=path)
    with pytest.raises(ConfigError, match="cannot read"):
        RecipientTable(DOMAINS, file=tmp_path / "missing")


def test_config_keys_and_their_errors(tmp_path: Path) -> None:
    config = MtaConfig.from_toml(
        """
        [relay]
        local_domains = ["example.org"]
        [local]
        mailboxes = ["postmaster", "Alice"]
        catch_all = ["postmaster"]
        recipients_file = "recipients"
        subaddress_delimiter = "-"
        lmtp = "/run/dovecot/lmtp"
        [local.aliases]
        bob = ["alice"]
        info = ["alice", "carol@Example.NET"]
        "@example.org" = "alice"
        """,
        base_dir=tmp_path,
    )
    local = config.local
    assert local.mailboxes == ("postmaster", "alice")
    assert dict(local.aliases) == {
        "bob": ("alice",),
        "info": ("alice", "carol@example.net"),
        "@example.org": ("alice",),
    }
    assert local.catch_all == ("postmaster",)
    assert local.recipients_file == tmp_path / "recipients"
    assert local.subaddress_delimiter == "-"
    assert local.lmtp == Path("/run/dovecot/lmtp")
    tcp = MtaConfig.from_dict({"local": {"lmtp": "127.0.0.1:24"}})
    assert str(tcp.local.lmtp) == "127.0.0.1:24"
    defaults = MtaConfig.default().local
    assert (defaults.mailboxes, dict(defaults.aliases), defaults.catch_all) == ((), {}, ())
    assert (defaults.recipients_file, defaults.subaddress_delimiter, defaults.lmtp) == (
        None,
        "+",
        None,
    )
    bad = {
        "local.mailboxes[0]": {"mailboxes": ["a b"]},
        "local.aliases.bob": {"aliases": {"bob": []}},
        "local.aliases.bob[0]": {"aliases": {"bob": ["x@"]}},
        "local.catch_all[0]": {"catch_all": [3]},
        "local.subaddress_delimiter": {"subaddress_delimiter": "ab"},
        "local.lmtp": {"lmtp": "127.0.0.1:25"},
    }
    for key, local_table in bad.items():
        with pytest.raises(ConfigError) as caught:
            MtaConfig.from_dict({"local": local_table})
        assert caught.value.key == key, (key, caught.value)
    with pytest.raises(ConfigError, match="not a socket path or host:port"):
        MtaConfig.from_dict({"local": {"lmtp": "localhost"}})


def test_serve_check_reads_the_recipients_file(tmp_path: Path) -> None:
    config = MtaConfig.from_dict({"local": {"recipients_file": "recipients"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot read the recipients file"):
        config.check_files()
    (tmp_path / "recipients").write_text("alice\nbob: alice\n")
    config.check_files()
