"""Drives `tidepool mcp --listen` with the official Python MCP client (PyPI
package `mcp`) over streamable HTTP, one scenario per invocation:

  access URL WRITE_TOKEN READ_TOKEN   tokens, scopes, Origin, confirmation,
                                      the new tools, paging
  readonly URL TOKEN                  --read-only hides and refuses
  load URL TOKEN                      10 concurrent sessions x 100 calls
  unreachable URL TOKEN               initialize and tools/list without a cluster
  serves URL WRITE_TOKEN READ_TOKEN   `tidepool run` serving MCP beside the controller

Secrets that must never appear in an answer are read from the environment
variable MCP_SECRETS (newline-separated); every answer is scanned. Prints one
line `ok <scenario> <answers scanned>` and exits 0, or fails with a message.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import ElicitResult

SECRETS = [s for s in os.environ.get("MCP_SECRETS", "").split("\n") if s.strip()]
ANSWERS = 0
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
READS = {"list_workers", "get_worker_details", "get_worker_health", "capacity_report", "plan_scaling", "run_doctor"}
# Every tool the server knows, as the Rust side lists it.
ALL_TOOLS = set(os.environ["MCP_TOOLS"].split(","))


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def scan(answer):
    """Counts an answer and checks that it holds no secret."""
    global ANSWERS
    ANSWERS += 1
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    for secret in SECRETS:
        check(secret not in text, f"an answer contains a secret: {text[:200]}")
    return answer


def client(url, token=None, mode="auto", elicit=None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = create_mcp_http_client(headers=headers)
    return http, Client(streamable_http_client(url, http_client=http), mode=mode, elicitation_callback=elicit)


async def call(c, tool, args):
    result = await c.call_tool(tool, args)
    return scan(result.model_dump(mode="json"))


def error_of(result):
    check(result.get("is_error"), f"expected a tool error, got {json.dumps(result)[:300]}")
    return result["structured_content"]["error"]


async def raw_post(url, headers):
    async with httpx2.AsyncClient() as http:
        r = await http.post(url, headers={**ACCEPT, **headers}, json=INIT)
        scan(r.text)
        return r.status_code


async def access(url, write, read):
    check(await raw_post(url, {}) == 401, "no token must get 401")
    check(await raw_post(url, {"Authorization": "Bearer not-a-token"}) == 401, "a wrong token must get 401")
    check(await raw_post(url, {"Authorization": f"Bearer {write}x"}) == 401, "a longer token must get 401")
    evil = {"Authorization": f"Bearer {write}", "Origin": "http://evil.example"}
    check(await raw_post(url, evil) == 403, "a disallowed Origin must get 403")
    good = {"Authorization": f"Bearer {write}", "Origin": "https://agent.example.com"}
    check(await raw_post(url, good) == 200, "an allowed Origin with a token must get 200")
    for token in (None, "not-a-token"):
        http, c = client(url, token)
        try:
            async with http, c:
                raise AssertionError(f"the client connected with token {token!r}")
        except AssertionError:
            raise
        except BaseException as e:  # the client reports the 401 as an error
            scan(repr(e))

    http, c = client(url, read)
    async with http, c:
        tools = await c.list_tools()
        scan(tools.model_dump(mode="json"))
        listed = await call(c, "list_workers", {})
        check(not listed.get("is_error"), f"a read token lists workers: {listed}")
        for tool, args in [
            ("drain_worker", {"worker_id": "burst-nope"}),
            ("provision_workers", {"count": 1, "pool": "burst"}),
            ("cordon_worker", {"worker_id": "burst-nope"}),
            ("scale_up", {}),
        ]:
            err = error_of(await call(c, tool, args))
            check(err["category"] == "refused" and "read scope" in err["message"], f"{tool}: {err}")

    http, c = client(url, write)
    async with http, c:
        made = await call(c, "provision_workers", {"count": 1, "pool": "burst", "size": "small", "ttl_hours": 2})
        check(not made.get("is_error"), f"provision: {made}")
        body = made["structured_content"]
        check(body["requested_by"] == "token:ops", f"the actor is the token's name: {body}")
        worker = body["workers"][0]["name"]
        err = error_of(await call(c, "destroy_worker", {"worker_id": worker, "force": True}))
        check(err["category"] == "refused" and "confirmation" in err["message"], f"force without a way to confirm: {err}")
        details = await call(c, "get_worker_details", {"worker_id": worker})
        check(not details.get("is_error"), f"details: {details}")
        up = await call(c, "scale_up", {"pools": ["burst"]})
        check(not up.get("is_error"), f"scale_up: {up}")
        check("plan" in up["structured_content"], f"scale_up shows its plan: {up}")
        bad = error_of(await call(c, "scale_up", {"pools": ["nope"]}))
        check(bad["category"] == "invalid", f"scale_up of an unknown pool: {bad}")
        nodes = (await call(c, "list_workers", {}))["structured_content"]["workers"]
        plain = [w["name"] for w in nodes if w["node_ready"] and not any(x in w["name"] for x in ("control-plane", "master", "permanent"))]
        check(plain, f"the lab has a node to cordon: {[w['name'] for w in nodes]}")
        node = (await call(c, "get_worker_details", {"worker_id": plain[0]}))["structured_content"]["node"]
        check(node["capacity"].get("cpu") and node["allocatable"].get("memory"), f"capacity: {node}")
        check(any(k["type"] == "Ready" for k in node["conditions"]), f"conditions: {node['conditions']}")
        check(node["talos_version"] and node["talos_version"].startswith("v"), f"Talos version: {node}")
        check(isinstance(node["pods"], list) and isinstance(node["events"], list), f"pods and events: {node}")
        check(node["labels"], f"labels: {node}")
        if plain:
            cordoned = await call(c, "cordon_worker", {"worker_id": plain[0]})
            check(not cordoned.get("is_error"), f"cordon: {cordoned}")
            uncordoned = await call(c, "uncordon_worker", {"worker_id": plain[0]})
            check(not uncordoned.get("is_error"), f"uncordon: {uncordoned}")
        await pages(c)

    async def decline(context, params):
        scan(params.model_dump(mode="json"))
        return ElicitResult(action="decline")

    async def accept(context, params):
        check(worker in params.message, f"the confirmation names the worker: {params.message}")
        return ElicitResult(action="accept", content={"confirm": True})

    for mode in ("auto", "legacy"):
        http, c = client(url, write, mode=mode, elicit=decline)
        async with http, c:
            err = error_of(await call(c, "destroy_worker", {"worker_id": worker, "force": True}))
            check("not confirmed" in err["message"], f"{mode}: a declined confirmation refuses: {err}")
    http, c = client(url, write, elicit=accept)
    async with http, c:
        gone = await call(c, "destroy_worker", {"worker_id": worker, "force": True})
        check(not gone.get("is_error"), f"a confirmed destroy goes ahead: {gone}")


async def pages(c):
    """Walks list_workers one worker per page."""
    first = (await call(c, "list_workers", {"limit": 1}))["structured_content"]
    seen, cursor = len(first["workers"]), first.get("next_cursor")
    while cursor is not None:
        page = (await call(c, "list_workers", {"limit": 1, "cursor": cursor}))["structured_content"]
        check(len(page["workers"]) == 1, f"one worker per page: {page}")
        seen, cursor = seen + 1, page.get("next_cursor")
    check(seen == first["count"], f"the pages hold every worker: {seen} of {first['count']}")
    check(first["count"] < 2 or first.get("next_cursor"), "a long list is paged")


async def readonly(url, token):
    http, c = client(url, token)
    async with http, c:
        names = {t.name for t in scan((await c.list_tools())).tools}
        check(names == READS, f"read-only mode lists only the read tools: {sorted(names)}")
        for tool in ("drain_worker", "provision_workers", "scale_up"):
            err = error_of(await call(c, tool, {"worker_id": "x"} if tool == "drain_worker" else {"count": 1, "pool": "burst"} if tool == "provision_workers" else {}))
            check(err["category"] == "refused" and "read-only" in err["message"], f"{tool}: {err}")
        check(not (await call(c, "list_workers", {})).get("is_error"), "read tools still answer")


async def load(url, token):
    async def session(n):
        http, c = client(url, token)
        async with http, c:
            for i in range(100):
                tool, args = [("list_workers", {}), ("list_workers", {"pool": "burst", "limit": 5}), ("plan_scaling", {})][i % 3]
                result = await call(c, tool, args)
                check(not result.get("is_error"), f"session {n} call {i} {tool}: {json.dumps(result)[:300]}")

    await asyncio.gather(*(session(n) for n in range(10)))
    check(ANSWERS == 1000, f"1000 answers, got {ANSWERS}")


async def unreachable(url, token):
    http, c = client(url, token, mode="legacy")
    async with http, c:
        info = c.initialize_result if hasattr(c, "initialize_result") else None
        scan(repr(info))
        names = {t.name for t in scan(await c.list_tools()).tools}
        check(names == ALL_TOOLS, f"tools/list without a cluster: {sorted(names)}")
        err = error_of(await call(c, "list_workers", {}))
        check(err["category"] == "unavailable", f"a call without a cluster: {err}")


async def serves(url, write, read):
    """`tidepool run` serves MCP beside the controller, over its caches."""
    http, c = client(url, write)
    async with http, c:
        listed = await call(c, "list_workers", {})
        check(not listed.get("is_error") and listed["structured_content"]["count"] >= 1, f"list: {listed}")
        made = await call(c, "provision_workers", {"count": 1, "pool": "burst", "size": "small"})
        check(made["structured_content"]["requested_by"] == "token:ops", f"the actor is the token's name: {made}")
    http, c = client(url, read)
    async with http, c:
        err = error_of(await call(c, "drain_worker", {"worker_id": "x"}))
        check(err["category"] == "refused", f"a read token cannot drain: {err}")


async def main():
    scenario, url, *tokens = sys.argv[1:]
    await {"access": access, "readonly": readonly, "load": load, "unreachable": unreachable, "serves": serves}[scenario](url, *tokens)
    print(f"ok {scenario} {ANSWERS}")


asyncio.run(main())
