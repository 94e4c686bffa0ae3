"""TLS at the router: what HTTPS costs dynosim's router relative to its own plain HTTP, against
what TLS termination costs nginx relative to its own plain proxying, side by side in one run.

Same app as bench/router.py (fixtures/dynolab's stdlib web server, keep-alive) without its access
log line (see TLS_APP). dynosim's public port serves plain HTTP and TLS on the same port; nginx
(1 worker, access_log off, keep-alive upstream) proxies the same dyno port, one plain and one
`ssl` server, with the very certificate and key dynosim's router uses (a CA made for the
benchmark: DYNOSIM_CA_DIR under the bench folder, so the user's own CA is left alone).
`wrk -t1 -c20 -d5s` on keep-alive connections, so the handshake is paid 20 times per run and the
figure is mostly record encryption; the five targets (the dyno direct too) alternate, order rotated
each round; medians.
Goal (issue 8): TLS costs dynosim no more, relative to its own plain HTTP, than it costs nginx,
in the measures the issue names: req/s with TLS ÷ without (kept) at least nginx's, and p99 with TLS
÷ without (grown) at most nginx's. Each ratio is taken within a round (the two runs it divides are
minutes apart at most) and the median over rounds is judged. On 2 cores shared by wrk, the proxy
and a GIL-bound dyno, a ratio moves from round to round by several percent for either proxy
(nginx's TLS/plain req/s came out anywhere from 0.82x to 1.09x between runs, above 1.0 in some,
which no TLS can cost): a difference between the two proxies smaller than that movement (the median
absolute deviation of nginx's own per-round ratio) is one the run cannot tell from none, and counts
as met. The CPU per request is printed too, plain and TLS: dynosim's process (the router; with a
quiet dyno it has nothing else to do) and nginx's (master and worker). It is not additive on this
machine: a process's CPU per request rises as it gets idler (each event costs a wake-up of its
own), so dynosim's process spent the same ~92 µs per request with the dyno's log line as without.
If the router does not answer HTTPS, this says so and skips. Without nginx (see bench.common.NGINX)
only its baseline is skipped, with a line saying so: dynosim's TLS ÷ plain is still measured, and
the goal, being relative to nginx's, counts as not met.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
from contextlib import nullcontext
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import NGINX, WORK_DIR, WRK, Unavailable, dynosim_env, find, mad, make_app, median, missing, require
from bench.router import APP, SERVER, Nginx, alternate, cpu_seconds, print_table, start_web, summary

CA_DIR = WORK_DIR / "ca"
QUIET = 'print("%s %s" % (self.command, self.path), flush=True)'
assert QUIET in SERVER
# Without its access log line, which dynosim's process would read and print whichever way a request
# came: its CPU is then the router's (its own line per request included), as nginx's is nginx's.
TLS_APP = {**APP, "server.py": SERVER.replace(QUIET, "pass")}


def https_answers(port: int, ca: Path) -> str | None:
    """None if GET https://127.0.0.1:port/ answers 200 with a certificate from `ca`; else why not."""
    try:
        context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        conn.request("GET", "/")
        status = conn.getresponse().status
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if status == 200 else f"HTTP {status}"


def measure(rounds: int) -> dict[str, object]:
    """Unavailable if the router does not answer HTTPS or there is no wrk."""
    require(WRK)
    no_nginx = None if find(NGINX) else missing(NGINX)
    if no_nginx:
        print(f"tls: nginx baseline skipped: {no_nginx}", file=sys.stderr, flush=True)
    app = make_app("tls-app", TLS_APP)
    env = {**dynosim_env(), "DYNOSIM_CA_DIR": str(CA_DIR)}
    run, dyno_port = start_web(app, env=env)
    with run:
        why = https_answers(run.port, CA_DIR / "ca.pem")
        cert, key = CA_DIR / "localhost.pem", CA_DIR / "localhost-key.pem"
        if why is None and not no_nginx and not (cert.exists() and key.exists()):
            why = f"the router answers HTTPS but {cert} / {key} are not there for nginx"
        if why:
            raise Unavailable(f"the router does not answer HTTPS on port {run.port} ({why})")
        with nullcontext() if no_nginx else Nginx(dyno_port, cert, key) as nginx:
            supervisor = cpu_seconds(run.proc.pid, children=False)  # the router's process, not its dynos
            targets = {
                "direct": f"http://127.0.0.1:{dyno_port}/",
                "dynosim http": f"http://127.0.0.1:{run.port}/",
                "dynosim https": f"https://127.0.0.1:{run.port}/",
            }
            cpu = {"dynosim http": supervisor, "dynosim https": supervisor}
            if nginx:
                targets.update(
                    {
                        "nginx http": f"http://127.0.0.1:{nginx.port}/",
                        "nginx https": f"https://127.0.0.1:{nginx.tls_port}/",
                    }
                )
                nginx_cpu = cpu_seconds(nginx.proc.pid)
                cpu.update({"nginx http": nginx_cpu, "nginx https": nginx_cpu})
            results = alternate(targets, rounds, cpu=cpu)
        protocols = run.log().count("protocol=https")
    if no_nginx:
        return without_nginx(results, protocols, no_nginx)
    keep = {proxy: per_round(results, proxy, "rps") for proxy in ("dynosim", "nginx")}
    grow = {proxy: per_round(results, proxy, "p99") for proxy in ("dynosim", "nginx")}
    keep_noise, grow_noise = mad(keep["nginx"]), mad(grow["nginx"])
    (d_keep, n_keep), (d_grow, n_grow) = (median(keep[p]) for p in keep), (median(grow[p]) for p in grow)
    keep_met, grow_met = d_keep >= n_keep - keep_noise, d_grow <= n_grow + grow_noise
    cpu = {name: median([x["cpu_us"] for x in runs]) for name, runs in results.items() if name != "direct"}
    s = summary(results)
    return {
        "name": "TLS vs plain through the router",
        "dynosim": f"https {s['dynosim https']['rps']:.0f} req/s: {d_keep:.2f}x of its http; p99 {d_grow:.2f}x",
        "baseline": f"nginx https {s['nginx https']['rps']:.0f} req/s: {n_keep:.2f}x of its http; p99 {n_grow:.2f}x",
        "ratio": d_keep / n_keep,
        "goal": "TLS ÷ plain: req/s ≥ nginx's, p99 ≤ nginx's (± noise)",
        "met": keep_met and grow_met,
        "keep": (d_keep, n_keep, keep_noise, keep_met),
        "grow": (d_grow, n_grow, grow_noise, grow_met),
        "https_lines": protocols,
        "cpu": cpu,
        "raw": results,
    }


def without_nginx(results: dict[str, list[dict[str, float]]], protocols: int, no_nginx: str) -> dict[str, object]:
    """dynosim's own TLS ÷ plain, with nothing to judge it against."""
    d_keep, d_grow = median(per_round(results, "dynosim", "rps")), median(per_round(results, "dynosim", "p99"))
    s = summary(results)
    return {
        "name": "TLS vs plain through the router",
        "dynosim": f"https {s['dynosim https']['rps']:.0f} req/s: {d_keep:.2f}x of its http; p99 {d_grow:.2f}x",
        "baseline": f"nginx skipped: {no_nginx}",
        "ratio": float("nan"),
        "goal": "TLS ÷ plain: req/s ≥ nginx's, p99 ≤ nginx's (± noise)",
        "met": False,  # the goal is relative to nginx, which did not run
        "keep": (d_keep, None, None, False),
        "grow": (d_grow, None, None, False),
        "no_nginx": no_nginx,
        "https_lines": protocols,
        "cpu": {name: median([x["cpu_us"] for x in runs]) for name, runs in results.items() if name != "direct"},
        "raw": results,
    }


def per_round(results: dict[str, list[dict[str, float]]], proxy: str, measure: str) -> list[float]:
    """The proxy's https ÷ http of one measure, round by round."""
    return [
        tls[measure] / plain[measure]
        for tls, plain in zip(results[f"{proxy} https"], results[f"{proxy} http"], strict=False)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=9, help="wrk rounds of each (default 9)")
    try:
        result = measure(parser.parse_args().rounds)
    except Unavailable as why:
        print(f"tls: skipped: {why}; no figures")
        return 2
    print("wrk -t1 -c20 -d5s (keep-alive), alternated rounds, medians:")
    print_table(result["raw"])  # type: ignore[arg-type]
    d_keep, n_keep, keep_noise, keep_met = result["keep"]  # type: ignore[misc]
    d_grow, n_grow, grow_noise, grow_met = result["grow"]  # type: ignore[misc]
    print(f"router log lines with protocol=https: {result['https_lines']}")
    if "no_nginx" in result:
        cpu = result["cpu"]  # type: ignore[assignment]
        print(
            f"dynosim with TLS ÷ plain (median of rounds): req/s {d_keep:.2f}x, p99 {d_grow:.2f}x; CPU per request "
            f"of its process {cpu['dynosim http']:.0f} µs plain, {cpu['dynosim https']:.0f} µs TLS"
        )
        print(f"goal {result['goal']}: not judged, {result['no_nginx']}")
        return 1
    print(
        f"req/s with TLS ÷ plain (median of rounds): dynosim {d_keep:.2f}x, nginx {n_keep:.2f}x "
        f"(nginx's own round-to-round movement ±{keep_noise:.2f}): {'met' if keep_met else 'NOT met'}"
    )
    print(
        f"p99 with TLS ÷ plain (median of rounds): dynosim {d_grow:.2f}x, nginx {n_grow:.2f}x "
        f"(±{grow_noise:.2f}): {'met' if grow_met else 'NOT met'}"
    )
    cpu = result["cpu"]  # type: ignore[assignment]
    print(
        f"CPU per request: dynosim's process {cpu['dynosim http']:.0f} µs plain, {cpu['dynosim https']:.0f} µs TLS "
        f"({cpu['dynosim https'] - cpu['dynosim http']:+.0f} µs); nginx {cpu['nginx http']:.0f} µs plain, "
        f"{cpu['nginx https']:.0f} µs TLS ({cpu['nginx https'] - cpu['nginx http']:+.0f} µs)"
    )
    print(f"goal {result['goal']}: {'met' if result['met'] else 'NOT met'}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
