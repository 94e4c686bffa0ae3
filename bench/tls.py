"""TLS at the router: what HTTPS costs dynosim's router relative to its own plain HTTP, against
what TLS termination costs nginx relative to its own plain proxying, side by side in one run.

Same app as bench/router.py (fixtures/dynolab's stdlib web server, keep-alive). dynosim's public
port serves plain HTTP and TLS on the same port; nginx (1 worker, access_log off, keep-alive
upstream) proxies the same dyno port, one plain and one `ssl` server, with the very certificate
and key dynosim's router uses (a CA made for the benchmark: DYNOSIM_CA_DIR under the bench
folder, so the user's own CA is left alone). `wrk -t1 -c20 -d5s` on keep-alive connections, so
the handshake is paid 20 times per run and the figure is mostly record encryption; the four
targets alternate, order rotated each round; medians.
Goal (issue 8): TLS costs dynosim no more, relative to its own plain HTTP, than it costs nginx.
The cost is measured as CPU per request: the router's (dynosim's process, less what a request
sent straight to the dyno costs it: the dyno's log line) with TLS ÷ without, against nginx's
(master and worker) with TLS ÷ without. req/s and p99 TLS ÷ plain are printed for both too, but
on 2 cores shared by wrk, the proxy and a GIL-bound dyno, req/s says who wins the CPU more than
what TLS costs: nginx's TLS/plain req/s came out anywhere from 0.82x to 1.07x between runs, above
1.0 in some, which no TLS can cost.
If the router does not answer HTTPS, this says so and skips.
"""
from __future__ import annotations

import argparse
import http.client
import ssl
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WORK_DIR, dynosim_env, make_app, median
from bench.router import APP, Nginx, alternate, cpu_seconds, print_table, start_web, summary

CA_DIR = WORK_DIR / "ca"


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


def measure(rounds: int) -> dict[str, object] | None:
    app = make_app("tls-app", APP)
    env = {**dynosim_env(), "DYNOSIM_CA_DIR": str(CA_DIR)}
    run, dyno_port = start_web(app, env=env)
    with run:
        why = https_answers(run.port, CA_DIR / "ca.pem")
        cert, key = CA_DIR / "localhost.pem", CA_DIR / "localhost-key.pem"
        if why is None and not (cert.exists() and key.exists()):
            why = f"the router answers HTTPS but {cert} / {key} are not there for nginx"
        if why:
            print(f"SKIPPED: the router does not answer HTTPS on port {run.port} ({why}).", file=sys.stderr)
            return None
        with Nginx(dyno_port, cert, key) as nginx:
            supervisor = cpu_seconds(run.proc.pid, children=False)  # the router's process, not its dynos
            nginx_cpu = cpu_seconds(nginx.proc.pid)
            results = alternate({"direct": f"http://127.0.0.1:{dyno_port}/",
                                 "dynosim http": f"http://127.0.0.1:{run.port}/",
                                 "dynosim https": f"https://127.0.0.1:{run.port}/",
                                 "nginx http": f"http://127.0.0.1:{nginx.port}/",
                                 "nginx https": f"https://127.0.0.1:{nginx.tls_port}/"}, rounds,
                                cpu={"direct": supervisor, "dynosim http": supervisor, "dynosim https": supervisor,
                                     "nginx http": nginx_cpu, "nginx https": nginx_cpu})
        protocols = run.log().count("protocol=https")
    s = summary(results)
    d_keep = s["dynosim https"]["rps"] / s["dynosim http"]["rps"]
    n_keep = s["nginx https"]["rps"] / s["nginx http"]["rps"]
    cpu = {name: median([x["cpu_us"] for x in runs]) for name, runs in results.items()}
    # the router's own CPU per request: its process's, less what the same request costs it when sent
    # straight to the dyno (reading and printing the dyno's log line)
    router = {proto: cpu[f"dynosim {proto}"] - cpu["direct"] for proto in ("http", "https")}
    d_cost, n_cost = router["https"] / router["http"], cpu["nginx https"] / cpu["nginx http"]
    return {
        "name": "TLS vs plain through the router",
        "dynosim": f"TLS costs the router {d_cost:.2f}x its plain CPU per request; https {s['dynosim https']['rps']:.0f} "
                   f"req/s = {d_keep:.2f}x of its http",
        "baseline": f"nginx: {n_cost:.2f}x; https {s['nginx https']['rps']:.0f} req/s = {n_keep:.2f}x of its http",
        "ratio": d_cost / n_cost,
        "goal": "TLS/plain CPU ≤ nginx's (ratio ≤ 1.00x)",
        "met": d_cost <= n_cost,
        "cost": (d_cost, n_cost),
        "router_cpu": router,
        "keep": (d_keep, n_keep),
        "p99": (s["dynosim https"]["p99"] / s["dynosim http"]["p99"], s["nginx https"]["p99"] / s["nginx http"]["p99"]),
        "https_lines": protocols,
        "cpu": cpu,
        "raw": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=5, help="wrk rounds of each (default 5)")
    result = measure(parser.parse_args().rounds)
    if result is None:
        print("tls: skipped (router HTTPS not answering); no figures")
        return 2
    print("wrk -t1 -c20 -d5s (keep-alive), alternated rounds, medians:")
    print_table(result["raw"])  # type: ignore[arg-type]
    d_keep, n_keep = result["keep"]  # type: ignore[misc]
    d_p99, n_p99 = result["p99"]  # type: ignore[misc]
    print(f"router log lines with protocol=https: {result['https_lines']}")
    print(f"req/s with TLS ÷ plain: dynosim {d_keep:.2f}x, nginx {n_keep:.2f}x; p99 with TLS ÷ plain: "
          f"dynosim {d_p99:.2f}x, nginx {n_p99:.2f}x")
    cpu, router = result["cpu"], result["router_cpu"]  # type: ignore[assignment]
    d_cost, n_cost = result["cost"]  # type: ignore[misc]
    print(f"CPU per request: the router {router['http']:.0f} µs plain, {router['https']:.0f} µs TLS ({d_cost:.2f}x; "
          f"dynosim's process less its {cpu['direct']:.0f} µs for a request sent straight to the dyno); "
          f"nginx {cpu['nginx http']:.0f} µs plain, {cpu['nginx https']:.0f} µs TLS ({n_cost:.2f}x)")
    print(f"goal {result['goal']}: {result['ratio']:.2f}x: {'met' if result['met'] else 'NOT met'}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
