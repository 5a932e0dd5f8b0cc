"""``/v1/jobs``: export jobs that Exchange creates, polls, downloads and may cancel."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from gateway import state
from gateway.api.requests import read_json_object
from gateway.errors import BadRequest, Conflict, GatewayError, NotFound, ServiceUnavailable
from gateway.db.csvcopy import scan_in_order, streaming_transaction
from gateway.http.csvout import StaticCsv, stream_csv
from gateway.http.fileout import send_csv_file
from gateway.jobs.exports import (JOB_TYPE, cancel_job, create_job, data_version, get_job, job_rows_query,
                                  measure_job_data, parse_job_id, store_job_data_length)
from gateway.http.ranges import range_asked
from gateway.http.responses import success
from gateway.audience.segments import get_segment, parse_segment_id

routes = web.RouteTableDef()
VERSION_TRIES = 3  # a download read its job, then an erasure changed the data: read it again


class Gone(GatewayError):
    status = 410
    code = "export_expired"


def job_status(row: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"id": row["id"], "status": row["status"]}
    if row["status"] == "error":
        result["reason"] = row["reason"]
    result.update({"jobDataId": row["data_id"], "segmentId": str(row["segment_id"]), "rowCount": row["row_count"],
                   "createdAt": row["created_at"].isoformat(),
                   "expiresAt": row["expires_at"].isoformat() if row["expires_at"] else None})
    return result


@routes.post("/v1/jobs")
async def post_job(request: web.Request) -> web.Response:
    payload = await read_json_object(request)
    if payload.get("jobType") != JOB_TYPE:
        raise BadRequest(f"jobType must be {JOB_TYPE!r}", code="invalid_job_type")
    raw = payload.get("segmentId", payload.get("segmentID"))
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise BadRequest("segmentId (an integer or a string of digits) is required", code="invalid_segment_id")
    segment_id = parse_segment_id(str(raw))
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.POOL].acquire() as conn:
        await get_segment(conn, endpoint_id, segment_id)
        return success(await create_job(conn, endpoint_id, segment_id))


@routes.get("/v1/jobs/{job_id}")
async def get_job_status(request: web.Request) -> web.Response:
    job_id = parse_job_id(request.match_info["job_id"])
    row = await get_job(request.app[state.CONTROL_POOL], request[state.PRINCIPAL].endpoint_id, job_id)
    return success(job_status(row))


@routes.delete("/v1/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    job_id = parse_job_id(request.match_info["job_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    async with request.app[state.POOL].acquire() as conn:
        await cancel_job(conn, request.app[state.SETTINGS], endpoint_id, job_id)
        return success(job_status(await get_job(conn, endpoint_id, job_id)))


@routes.get("/v1/jobs/{job_id}/data/{data_id}")
async def get_job_data(request: web.Request) -> web.StreamResponse:
    """The snapshot file as CSV, with a strong ETag and byte ranges. An erasure may rewrite the file between
    reading the job and opening it (it removes the old one): then it starts again with the new version; a
    file once open is sent whole, of the version its ETag names."""
    job_id = parse_job_id(request.match_info["job_id"])
    endpoint_id = request[state.PRINCIPAL].endpoint_id
    for _ in range(VERSION_TRIES):
        row = await available(request, endpoint_id, job_id)
        if row["data_file"] is None:
            return await stream_table(request, endpoint_id, job_id)
        try:
            file = open(request.app[state.SETTINGS].export_path / row["data_file"], "rb")  # noqa: SIM115
        except FileNotFoundError:
            if (await available(request, endpoint_id, job_id))["data_file"] != row["data_file"]:
                continue  # an erasure rewrote it meanwhile
            raise Gone(f"the data of job {job_id} is not in this gateway's export directory "
                       "(GATEWAY_EXPORT_DIR must be shared by every gateway process)") from None
        with file:
            return await send_csv_file(request, file, row["data_bytes"], data_etag(row), filename=f"job-{job_id}.csv")
    raise ServiceUnavailable(f"the data of job {job_id} kept changing (erasures); try again")


async def available(request: web.Request, endpoint_id: int, job_id: int) -> Any:
    """The job, if the request's data id names its data and that data can be downloaded."""
    row = await get_job(request.app[state.CONTROL_POOL], endpoint_id, job_id)
    if request.match_info["data_id"] != str(row["data_id"]):
        raise NotFound(f"job {job_id} has no data {request.match_info['data_id']!r}", code="job_data_not_found")
    if row["status"] not in ("complete", "canceled"):
        raise Conflict(f"job {job_id} is {row['status']}; its data is ready once it is complete",
                       code="job_not_complete")
    if row["status"] == "canceled" or row["expired"] or row["data_dropped_at"] is not None:
        raise Gone(f"the data of job {job_id} is no longer available")
    return row


async def stream_table(request: web.Request, endpoint_id: int, job_id: int) -> web.StreamResponse:
    """The data of a job completed before snapshot files (migration 0018): its table, streamed by COPY. An
    erasure may shorten the table between reading the job and streaming it: the ETag and length belong to the
    version read, and the stream's snapshot must be of that version (checked in it), else it starts again."""
    async with request.app[state.DATA_SLOTS].connection(request.app[state.POOL]) as conn:
        for _ in range(VERSION_TRIES):
            row = await available(request, endpoint_id, job_id)
            attributes, version = row["attributes"], row["data_erasures"]
            query = job_rows_query(job_id, attributes)
            etag = data_etag(row)
            length = row["data_bytes"]  # NULL until a full download streamed to its end or a range measured it
            if length is None and range_asked(request.headers, etag):
                length = await measure_job_data(conn, job_id, version, query, attributes)
                if length is None:
                    continue  # an erasure changed the data meanwhile
            static = StaticCsv(etag, length, functools.partial(store_job_data_length, conn, job_id, version))
            async with streaming_transaction(conn, isolation="repeatable_read"):
                if await data_version(conn, job_id) != version:
                    continue
                await scan_in_order(conn)  # the same bytes every time
                return await stream_csv(request, conn, query, attributes, filename=f"job-{job_id}.csv",
                                        static=static)
    raise ServiceUnavailable(f"the data of job {job_id} kept changing (erasures); try again")


def data_etag(row: Any) -> str:
    """Names one version of a job's data: a data id names one snapshot, and an erasure that shortens it
    makes a new version (a range resumed with If-Range then never joins bytes from before and after it)."""
    version = f"-e{row['data_erasures']}" if row["data_erasures"] else ""
    return f'"job-{row["id"]}-{row["data_id"]}{version}"'
