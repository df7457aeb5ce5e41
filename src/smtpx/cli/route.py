"""``smtpx route test ADDRESS``: what ``smtpx serve`` would do with mail for ADDRESS.

It routes as the server does, with its configuration (``--config``) and its resolver:
local delivery, an explicit route, the smarthost, or the MX records; then, for mail
delivered by MX, the outbound TLS policy of each MX host (DANE, MTA-STS enforce or
testing, or the ``[[routing.tls]]`` entry) and why. MTA-STS policies are read from the
server's cache in the spool directory, and fetched when missing or changed; nothing is
written there, and nothing is delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from smtpx.cli.common import EXIT_FAILURE, EXIT_USAGE, Failure, load_config, run

if TYPE_CHECKING:
    from smtpx.mta.config import MtaConfig
    from smtpx.mta.resolver import RoutingResolver
    from smtpx.mta.routing import Route, Router

__all__ = ["route"]


@click.group()
def route() -> None:
    """Where mail goes, and under which TLS policy.

    \b
    smtpx route test user@example.com --config /etc/smtpx/smtpx.toml
    """


@route.command("test")
@click.argument("address")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="The smtpx serve configuration (default: the embedded one).",
)
def test_route(address: str, config_file: str | None) -> None:
    """Show the route of mail for ADDRESS (or a domain), the TLS policy of each next hop,
    and why. Exit status 0 when the mail would be delivered or tried, 1 when it would
    fail for good or wait (no route now, no MX host the policies allow)."""
    from smtpx.mta.config import MtaConfig  # noqa: PLC0415 - keep --help fast

    config = load_config(config_file) if config_file else MtaConfig.default()
    domain = _domain_of(address)
    lines, ok = run(_explain(config, domain))
    for line in lines:
        click.echo(line)
    if not ok:
        raise SystemExit(EXIT_FAILURE)


def _domain_of(address: str) -> str:
    from smtpx.errors import ParseError  # noqa: PLC0415
    from smtpx.protocol.addresses import Address  # noqa: PLC0415

    if "@" not in address:
        return address
    try:
        return Address.parse(address).domain
    except ParseError as exc:
        raise Failure(f"not an address: {exc}", EXIT_USAGE) from None


async def _explain(config: MtaConfig, domain: str) -> tuple[list[str], bool]:
    from smtpx.mta.resolver import RoutingResolver  # noqa: PLC0415 - keep --help fast
    from smtpx.mta.routing import NoRoute, Route, Router  # noqa: PLC0415

    routing = config.routing
    dns = RoutingResolver.at(routing.resolver, trust_ad=routing.dane.enabled)
    router = Router(config, dns)
    result = await router.route(domain)
    lines = [f"destination: {domain}"]
    if isinstance(result, NoRoute):
        return [*lines, f"no route, for good: {result.reply}"], False
    if not isinstance(result, Route):
        return [*lines, f"no route now (tried later): {result.reason}"], False
    if result.local:
        return [*lines, f"local delivery into {config.local.maildir}"], True
    lines.append(f"route: {_kind(result)}")
    if result.by_mx and (routing.mta_sts.enabled or routing.dane.enabled):
        return await _planned(config, dns, router, result, lines)
    for hop in result.hops:
        lines.append(f"  {hop}: {_configured(config, hop.host)}")
    if result.by_mx:
        lines.append("TLS policy: [[routing.tls]] (routing.mta_sts and routing.dane are off)")
    return lines, True


async def _planned(
    config: MtaConfig, dns: RoutingResolver, router: Router, result: Route, lines: list[str]
) -> tuple[list[str], bool]:
    from smtpx.mta.tlspolicy import TlsPolicies  # noqa: PLC0415 - keep --help fast

    policies = TlsPolicies.from_config(config, dns=dns, router=router, keep=False)
    plan = await policies.plan(result)
    skipped = dict(plan.skipped)
    for hop in result.hops:
        policy = plan.policy_for(hop)
        if policy is None:
            lines.append(f"  {hop}: not used: {skipped.get(hop, 'not in the plan')}")
        else:
            lines.append(f"  {hop}: {policy.kind}: {policy.reason}")
    kinds = sorted({policy.kind for policy in plan.hops})
    lines.append(f"TLS policy: {', '.join(kinds) or 'none usable: the mail waits'}")
    lines += [f"  {note}" for note in plan.notes]
    return lines, bool(plan.hops)


def _kind(result: Route) -> str:
    described = {
        "route": f"explicit route {result.name} (routing.routes)",
        "smarthost": "the smarthost (routing.smarthost)",
        "literal": "an address literal",
        "mx": f"the MX records of {result.name}",
        "implicit-mx": f"{result.name} itself (no MX records: its A/AAAA records)",
    }
    return described.get(result.kind, result.kind)


def _configured(config: MtaConfig, host: str) -> str:
    from smtpx.mta.tlspolicy import describe_tls  # noqa: PLC0415 - keep --help fast

    text = describe_tls(config.client_config().tls_for(host)) + " ([[routing.tls]])"
    credentials = config.routing.credentials.get(host)
    return text + (f", AUTH as {credentials.username}" if credentials else "")
