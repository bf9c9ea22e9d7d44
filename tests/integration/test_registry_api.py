"""The registry's HTTP API against real PostgreSQL and Kafka: RBAC, aliases, governance, audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRejected,
    ExternalCheckReported,
    ModelPromoted,
    ModelRolledBack,
)
from tests.conftest import Infra, wait_for
from tests.integration.registry_support import (
    BOOTSTRAP_TOKEN,
    Registry,
    canary_healthy,
    gate_failed,
    gate_passed,
    registry,
    run_finished,
)

pytestmark = pytest.mark.integration
__all__ = ["registry"]

ROLES = ["viewer", "operator", "approver", "admin", "auditor"]
PERMISSIONS = {
    "viewer": {"read"},
    "operator": {"read", "promote", "rollback", "report_check"},
    "approver": {"read", "approve"},
    "auditor": {"read", "audit_read"},
    "admin": {
        "read",
        "promote",
        "rollback",
        "approve",
        "report_check",
        "audit_read",
        "manage_tokens",
    },
}


async def make_token(reg: Registry, *grants: dict[str, Any], principal: str = "alice") -> str:
    async with reg.client() as client:
        response = await client.post("/tokens", json={"principal": principal, "grants": grants})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def register(reg: Registry, *run_ids: str) -> None:
    for run_id in run_ids:
        await reg.wait_handled(await reg.publish(run_finished(run_id)))


# --- RBAC ----------------------------------------------------------------------------------


PATH_VALUES = {
    "model": "churn",
    "version": "1.0.0",
    "alias": "shadow",
    "stage": "approve",
    "check": "code-review",
    "token_id": "0123456789abcdef",
    "grant_id": "999999",
}
BODIES = {
    "/models/{model}/aliases/{alias}": {"version": "1.0.0"},
    "/models/{model}/versions/{version}/checks/{check}": {"status": "passed"},
    "/tokens": {"principal": "someone"},
    "/tokens/{token_id}/grants": {"role": "viewer"},
}


async def test_rbac_matrix_every_endpoint_every_role_and_expired_grants(
    registry: Registry,
) -> None:
    await register(registry, "run-1")
    tokens = {role: await make_token(registry, {"role": role}, principal=role) for role in ROLES}
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = {
        role: await make_token(registry, {"role": role, "expires_at": past}, principal=f"x-{role}")
        for role in ROLES
    }
    async with registry.client() as client:
        spec = (await client.get("/openapi.json")).json()
    operations = [
        (method.upper(), path, op["x-required-permission"])
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]
    assert len(operations) >= 20
    assert {p for _, _, p in operations} >= {
        "read",
        "promote",
        "rollback",
        "approve",
        "report_check",
        "audit_read",
        "manage_tokens",
        "authenticated",
    }
    checked = 0
    for method, template, permission in operations:
        url = template.format(**PATH_VALUES)
        body = BODIES.get(template) if method == "POST" else None
        time_query = {"time": datetime.now(UTC).isoformat()} if url.endswith("/at") else None

        async def call(
            token: str | None,
            url: str = url,
            method: str = method,
            body: Any = body,
            params: Any = time_query,
        ) -> int:
            async with registry.client(token) as client:
                response = await client.request(method, url, json=body, params=params)
            return response.status_code

        assert await call(None) == 401, (method, template, "no token")
        assert await call("mlcp_0123456789abcdef_" + "A" * 43) == 401, (method, template)
        for role in ROLES:
            may = permission == "authenticated" or permission in PERMISSIONS[role]
            status = await call(tokens[role])
            if may:
                assert status not in (401, 403), (method, template, role, status)
            else:
                assert status == 403, (method, template, role, status)
            expired_status = await call(expired[role])
            expected = 200 if permission == "authenticated" else 403
            assert expired_status == expected, (method, template, role, "expired")
            checked += 2
    assert checked == len(operations) * len(ROLES) * 2


async def test_revoked_grant_and_token_stop_working_at_once(registry: Registry) -> None:
    async with registry.client() as admin:
        created = (
            await admin.post("/tokens", json={"principal": "ci", "grants": [{"role": "viewer"}]})
        ).json()
        token, token_id = created["token"], created["id"]
        grant_id = created["grants"][0]["id"]
        async with registry.client(token) as ci:
            assert (await ci.get("/models")).status_code == 200
            assert (await admin.delete(f"/tokens/{token_id}/grants/{grant_id}")).status_code == 204
            assert (await ci.get("/models")).status_code == 403
            assert (await ci.get("/whoami")).json() == {"principal": "ci", "roles": []}
            grant = await admin.post(f"/tokens/{token_id}/grants", json={"role": "auditor"})
            assert grant.status_code == 201
            assert (await ci.get("/audit")).status_code == 200
            assert (await admin.delete(f"/tokens/{token_id}")).status_code == 204
            assert (await ci.get("/models")).status_code == 401
        listed = (await admin.get("/tokens")).json()
        assert listed[0]["id"] == token_id
        assert "secret_hash" not in listed[0]
    stored = await registry.fetchval("SELECT secret_hash FROM tokens WHERE id = $1", token_id)
    assert stored.startswith("scrypt$")
    assert token.split("_")[-1] not in stored


# --- aliases, promotion, rollback ----------------------------------------------------------


async def test_alias_resolution_with_etag_and_history_and_time_travel(registry: Registry) -> None:
    await register(registry, "run-1", "run-2")
    await registry.wait_handled(await registry.publish(gate_passed("1.0.0")))
    await registry.wait_handled(await registry.publish(canary_healthy("1.0.0")))
    between = datetime.now(UTC)
    async with registry.client() as client:
        first = await client.get("/models/churn/aliases/production")
        assert first.status_code == 200
        body = first.json()
        assert body["version"] == "1.0.0"
        assert body["artifact"]["sha256"] == run_finished("run-1").artifact.sha256
        etag = first.headers["etag"]
        same = await client.get("/models/churn/aliases/production", headers={"If-None-Match": etag})
        assert same.status_code == 304
        assert same.headers["etag"] == etag

        promoted = await client.post(
            "/models/churn/aliases/production", json={"version": "1.0.1", "reason": "hotfix"}
        )
        assert promoted.status_code == 200, promoted.text
        changed = await client.get(
            "/models/churn/aliases/production", headers={"If-None-Match": etag}
        )
        assert changed.status_code == 200
        assert changed.json()["version"] == "1.0.1"
        assert changed.headers["etag"] != etag

        then = await client.get(
            "/models/churn/aliases/production/at", params={"time": between.isoformat()}
        )
        assert then.json()["version"] == "1.0.0"
        now = await client.get(
            "/models/churn/aliases/production/at", params={"time": datetime.now(UTC).isoformat()}
        )
        assert now.json()["version"] == "1.0.1"
        before_all = await client.get(
            "/models/churn/aliases/production/at", params={"time": "2000-01-01T00:00:00Z"}
        )
        assert before_all.json()["version"] is None

        history = (await client.get("/models/churn/aliases/production/history")).json()["items"]
        assert [(h["version"], h["actor"], h["reason"]) for h in history] == [
            ("1.0.1", "bootstrap-admin", "hotfix"),
            ("1.0.0", "mlcp/monitor", "canary healthy"),
        ]
        assert (await client.get("/models/churn/aliases/nope")).status_code == 404
        assert (await client.get("/models/nope/aliases/production")).status_code == 404
    promoted_events = await registry.outbox(ModelPromoted.TYPE)
    manual = promoted_events[-1].data
    assert (manual.alias, manual.version, manual.previous_version) == (
        "production",
        "1.0.1",
        "1.0.0",
    )
    assert (manual.cause, manual.actor) == ("manual", "bootstrap-admin")


async def test_manual_promote_and_rollback_errors_and_conflicts(registry: Registry) -> None:
    await register(registry, "run-1", "run-2", "run-3")
    await registry.wait_handled(await registry.publish(gate_failed("1.0.2")))
    async with registry.client() as client:
        missing_model = await client.post(
            "/models/nope/aliases/production", json={"version": "1.0.0"}
        )
        assert missing_model.status_code == 404
        assert "nope" in missing_model.json()["detail"]
        missing = await client.post("/models/churn/aliases/production", json={"version": "9.0.0"})
        assert missing.status_code == 404
        assert "9.0.0" in missing.json()["detail"]
        rejected = await client.post("/models/churn/aliases/production", json={"version": "1.0.2"})
        assert rejected.status_code == 409
        assert "rejected" in rejected.json()["detail"]
        no_target = await client.post("/models/churn/aliases/production/rollback")
        assert no_target.status_code == 409
        bad = await client.post("/models/churn/aliases/production", json={"version": "v1"})
        assert bad.status_code == 422

        assert (
            await client.post("/models/churn/aliases/production", json={"version": "1.0.0"})
        ).status_code == 200
        again = await client.post("/models/churn/aliases/production", json={"version": "1.0.0"})
        assert again.status_code == 409
        assert (
            await client.post("/models/churn/aliases/production", json={"version": "1.0.1"})
        ).status_code == 200
        back = await client.post(
            "/models/churn/aliases/production/rollback", json={"reason": "bad latency"}
        )
        assert back.status_code == 200, back.text
        assert back.json()["aliases"] == {"production": "1.0.0"}

        versions = (await client.get("/models/churn/versions", params={"limit": 2})).json()
        assert [v["version"] for v in versions["items"]] == ["1.0.2", "1.0.1"]
        assert versions["next_offset"] == 2
        rejected_only = (
            await client.get("/models/churn/versions", params={"status": "rejected"})
        ).json()
        assert [v["version"] for v in rejected_only["items"]] == ["1.0.2"]
        assert (
            await client.get("/models/churn/versions", params={"status": "x"})
        ).status_code == 422
        models = (await client.get("/models", params={"prefix": "ch"})).json()["items"]
        assert [(m["name"], m["production"], m["latest_version"]) for m in models] == [
            ("churn", "1.0.0", "1.0.2")
        ]
        lineage = (await client.get("/models/churn/versions/1.0.1/lineage")).json()
        assert lineage["run"]["run_id"] == "run-2"
        assert lineage["datasets"][0]["batch_ids"] == ["2025-03-01-a", "2025-03-01-b"]
        assert lineage["previous_version"] == "1.0.0"
        detail = (await client.get("/models/churn/versions/1.0.1")).json()
        assert detail["status"] == "archived"
        assert detail["feature_schema"][0]["name"] == "tenure_months"
    rolled = await registry.outbox(ModelRolledBack.TYPE)
    assert [
        (e.data.from_version, e.data.to_version, e.data.cause, e.data.actor) for e in rolled
    ] == [("1.0.1", "1.0.0", "manual", "bootstrap-admin")]


async def test_concurrent_promotions_conflict_and_if_match_guards_stale_writes(
    registry: Registry,
) -> None:
    await register(registry, "run-1", "run-2")
    async with registry.client() as one, registry.client() as two:
        results = await asyncio.gather(
            one.post("/models/churn/aliases/production", json={"version": "1.0.0"}),
            two.post("/models/churn/aliases/production", json={"version": "1.0.0"}),
        )
        assert sorted(r.status_code for r in results) == [200, 409]
        loser = next(r for r in results if r.status_code == 409)
        assert "already points to 1.0.0" in loser.json()["detail"]

        etag = (await one.get("/models/churn/aliases/production")).headers["etag"]
        moved = await one.post(
            "/models/churn/aliases/production",
            json={"version": "1.0.1"},
            headers={"If-Match": etag},
        )
        assert moved.status_code == 200
        stale = await two.post(
            "/models/churn/aliases/production/rollback", headers={"If-Match": etag}
        )
        assert stale.status_code == 412
        assert "not " + etag in stale.json()["detail"]
        assert (await two.get("/models/churn/aliases/production")).json()["version"] == "1.0.1"
    history = await registry.fetch(
        "SELECT version FROM alias_history WHERE alias = 'production' ORDER BY id"
    )
    assert [h["version"] for h in history] == ["1.0.0", "1.0.1"]


# --- approvals and external checks -----------------------------------------------------------


async def test_approve_reject_and_report_check_emit_through_the_outbox(registry: Registry) -> None:
    await register(registry, "run-1")
    approver = await make_token(registry, {"role": "approver"}, principal="carol@example.com")
    ci = await make_token(registry, {"role": "operator"}, principal="github-ci")
    async with registry.client(approver) as client:
        ok = await client.post(
            "/models/churn/versions/1.0.0/stages/approve/approve", json={"comment": "lgtm"}
        )
        assert ok.status_code == 202, ok.text
        no = await client.post("/models/churn/versions/1.0.0/stages/approve/reject")
        assert no.status_code == 202
        unknown_stage = await client.post("/models/churn/versions/1.0.0/stages/quality/approve")
        assert unknown_stage.status_code == 404
        assert "manual stage 'quality'" in unknown_stage.json()["detail"]
        unknown_version = await client.post("/models/churn/versions/3.0.0/stages/approve/approve")
        assert unknown_version.status_code == 404
    async with registry.client(ci) as client:
        reported = await client.post(
            "/models/churn/versions/1.0.0/checks/code-review",
            json={"status": "passed", "url": "https://ci.example.com/runs/1"},
        )
        assert reported.status_code == 202, reported.text
        assert reported.json()["check"] == "review"
        bad = await client.post(
            "/models/churn/versions/1.0.0/checks/code-review", json={"status": "maybe"}
        )
        assert bad.status_code == 422
    granted = await registry.outbox(ApprovalGranted.TYPE)
    assert [(e.data.stage, e.data.approver, e.data.comment) for e in granted] == [
        ("approve", "carol@example.com", "lgtm")
    ]
    assert len(await registry.outbox(ApprovalRejected.TYPE)) == 1
    checks = await registry.outbox(ExternalCheckReported.TYPE)
    assert [(e.data.check, e.data.status, e.data.reporter) for e in checks] == [
        ("review", "passed", "github-ci")
    ]
    published = await registry.emitted(ExternalCheckReported.TYPE)
    assert [e.id for e in published] == [e.id for e in checks]


# --- audit -----------------------------------------------------------------------------------


async def test_audit_log_is_append_only_and_an_edit_is_named(
    registry: Registry, infra: Infra
) -> None:
    await register(registry, "run-1", "run-2")
    await registry.wait_handled(await registry.publish(gate_passed("1.0.0")))
    auditor = await make_token(registry, {"role": "auditor"}, principal="audit")
    async with registry.client(auditor) as client:
        rows = (await client.get("/audit", params={"model": "churn"})).json()["items"]
        assert [r["action"] for r in rows] == ["registration", "registration", "promotion"]
        assert rows[2]["cause_event_id"] is not None
        assert rows[2]["after"]["canary"] == "1.0.0"
        assert rows[2]["before"]["canary"] is None
        everything = (await client.get("/audit")).json()["items"]
        assert {r["key_id"] for r in everything} == {registry.runtime_key_id}

        async def anchored() -> Any:
            verdict = (await client.get("/audit/verify")).json()
            checkpoint = verdict["checkpoint"]
            return verdict if checkpoint and checkpoint["seq"] == len(everything) else None

        verdict = await wait_for(anchored, what="every row's checkpoint on Kafka")
    assert verdict["ok"] is True, verdict
    assert verdict["rows_checked"] == len(everything)
    assert (verdict["first_bad_seq"], verdict["problem"], verdict["warning"]) == (None, None, None)
    target = rows[1]["seq"]

    conn = await asyncpg.connect(infra.database_url)
    schema = registry.settings.db_schema
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(f"UPDATE {schema}.audit_log SET actor = 'mallory' WHERE seq = 1")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(f"DELETE FROM {schema}.audit_log WHERE seq = 1")
        # Someone with the owner's rights disables the guard and edits one row.
        async with conn.transaction():
            await conn.execute(
                f"ALTER TABLE {schema}.audit_log DISABLE TRIGGER audit_log_no_update"
            )
            await conn.execute(
                f"""UPDATE {schema}.audit_log SET after = jsonb_set(after, '{{run_id}}', '"run-x"')
                    WHERE seq = $1""",
                target,
            )
            await conn.execute(f"ALTER TABLE {schema}.audit_log ENABLE TRIGGER audit_log_no_update")
    finally:
        await conn.close()

    async with registry.client(auditor) as client:
        verdict = (await client.get("/audit/verify")).json()
    found = (verdict["ok"], verdict["first_bad_seq"], verdict["problem"])
    assert found == (False, target, "changed")
    assert verdict["rows_checked"] == target - 1
    assert "changed" in verdict["reason"]


async def test_bootstrap_token_is_admin_and_bad_tokens_are_401(registry: Registry) -> None:
    async with registry.client() as client:
        assert (await client.get("/whoami")).json() == {
            "principal": "bootstrap-admin",
            "roles": ["admin"],
        }
    for header in ("Basic abc", "Bearer", "Bearer nope", f"Bearer {BOOTSTRAP_TOKEN}x"):
        async with registry.client(None) as client:
            response = await client.get("/models", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"].startswith("Bearer")


# --- hardening: errors are problem documents, never a 500 ---------------------------------------

NON_FINITE = ["1e309", "-1e309", "NaN", "Infinity", "-Infinity"]


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = dict(response.json())
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


@pytest.mark.parametrize("number", NON_FINITE)
async def test_non_finite_numbers_are_refused_with_422(registry: Registry, number: str) -> None:
    await register(registry, "run-1")
    json_body = {"content-type": "application/json"}
    async with registry.client() as client:
        promote = await client.post(
            "/models/churn/aliases/canary",
            content=f'{{"version": "1.0.0", "traffic_percent": {number}}}',
            headers=json_body,
        )
        token = await client.post(
            "/tokens",
            content='{"principal": "x", "grants": [{"role": "viewer", "ttl_seconds": N}]}'.replace(
                "N", number
            ),
            headers=json_body,
        )
        aliases = (await client.get("/models/churn/aliases")).json()
    issue = assert_problem(promote, 422)["errors"][0]
    assert issue["loc"] == ["body", "traffic_percent"]
    assert issue["type"] == "finite_number"
    assert "input" not in issue  # never echoed: it may not even be writable as JSON
    issue = assert_problem(token, 422)["errors"][0]
    assert issue["loc"] == ["body", "grants", 0, "ttl_seconds"]
    assert aliases == {}, "nothing was promoted"


async def test_authentication_and_permission_come_before_validation(registry: Registry) -> None:
    await register(registry, "run-1")
    viewer = await make_token(registry, {"role": "viewer"}, principal="v")
    invalid = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    async with registry.client(None) as anonymous:
        response = await anonymous.post("/models/churn/aliases/canary", **invalid)
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert body["instance"] == "/models/churn/aliases/canary"
        assert_problem(await anonymous.get("/audit", params={"until": "0.5"}), 401)
        assert_problem(await anonymous.get("/models/NOT A SLUG"), 401)
    async with registry.client(viewer) as client:
        body = assert_problem(await client.post("/models/churn/aliases/canary", **invalid), 403)
        assert "'promote'" in body["detail"]
        assert_problem(await client.post("/tokens", json={"principal": 1}), 403)
    async with registry.client() as admin:
        body = assert_problem(await admin.post("/models/churn/aliases/canary", **invalid), 422)
        assert body["errors"][0]["type"] == "json_invalid"
        undecodable = {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}
        assert_problem(await admin.post("/tokens", **undecodable), 422)


async def test_dates_are_parsed_strictly(registry: Registry) -> None:
    await register(registry, "run-1")
    async with registry.client() as client:
        for bad in ("0.5", "1700000000", "2026-01-31", "2026-01-31T12:00:00", "yesterday"):
            for route, name in (
                ("/audit", "until"),
                ("/models/churn/aliases/production/at", "time"),
            ):
                body = assert_problem(await client.get(route, params={name: bad}), 422)
                assert body["errors"][0]["loc"] == ["query", name], bad
                assert "RFC 3339" in body["detail"]
        for good in ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123+02:00"):
            assert (await client.get("/audit", params={"until": good})).status_code == 200
        grant = {"principal": "x", "grants": [{"role": "viewer", "expires_at": 1893456000}]}
        assert_problem(await client.post("/tokens", json=grant), 422)
        both = {"role": "viewer", "expires_at": "2030-01-01T00:00:00Z", "ttl_seconds": 60}
        body = assert_problem(
            await client.post("/tokens", json={"principal": "x", "grants": [both]}), 422
        )
        assert body["errors"][0]["loc"] == ["body", "grants", 0]
        assert "not both" in body["detail"]


async def test_unknown_routes_and_methods_answer_problem_documents(registry: Registry) -> None:
    async with registry.client() as client:
        assert_problem(await client.get("/no/such/route"), 404)
        assert_problem(await client.get("/models/a%0Ab/aliases"), 404)  # not even routable
        assert_problem(await client.put("/models"), 405)


async def test_openapi_declares_every_error_with_the_one_problem_schema(registry: Registry) -> None:
    async with registry.client(None) as client:
        spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"title", "status", "detail"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            errors = {int(code) for code in responses if int(code) >= 400}
            expected = {401, 503}
            if operation["x-required-permission"] != "authenticated":
                expected.add(403)
            if operation.get("parameters") or operation.get("requestBody"):
                expected.add(422)
            if "{" in path:
                expected.add(404)
            assert expected <= errors, (method, path, errors)
            assert errors <= {401, 403, 404, 409, 412, 422, 503}, (method, path)
            for code in errors:
                content = responses[str(code)]["content"]
                assert content == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, code)
            assert responses["401"]["headers"]["WWW-Authenticate"]
            assert responses["503"]["headers"]["Retry-After"]
    promote = spec["paths"]["/models/{model}/aliases/{alias}"]["post"]["responses"]
    assert {"404", "409", "412"} <= set(promote)
