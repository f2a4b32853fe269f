"""A second-language client: Python stubs generated from our proto, driving a running server.

Usage: client.py ADDR API_KEY   (the account needs at least 10 credits and at most 1,000)
Exits non-zero with a message on the first thing that is not as the contract says.
"""
import importlib.resources
import pathlib
import sys
import tempfile

import grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def generate_stubs(out: str) -> None:
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    code = protoc.main([
        "protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        "wavalidation/v1/wavalidation.proto",
    ])
    assert code == 0, "protoc failed"
    sys.path.insert(0, out)


def main(addr: str, key: str) -> None:
    generate_stubs(tempfile.mkdtemp())
    from wavalidation.v1 import wavalidation_pb2 as pb
    from wavalidation.v1 import wavalidation_pb2_grpc as rpc

    stub = rpc.WaValidationServiceStub(grpc.insecure_channel(addr))
    auth = [("authorization", f"Bearer {key}")]

    sub = stub.SubmitBatch(pb.SubmitBatchRequest(
        phone_numbers=["+1 415-555-2671", "+14155552671", "(415) 555-0100", "garbage"],
        default_region="us"), metadata=auth)
    assert sub.total_numbers == 3, sub
    assert sub.batch_id == sub.batch_id.lower()

    results, completed = [], None
    for event in stub.WatchBatch(pb.WatchBatchRequest(batch_id=sub.batch_id), metadata=auth):
        kind = event.WhichOneof("event")
        if kind == "result":
            assert completed is None, "result after completed"
            results.append(event.result)
        else:
            completed = event.completed
    assert completed is not None and completed.total_numbers == 3, completed
    assert sorted(r.index for r in results) == [0, 1, 2], results

    poll = stub.PollBatch(pb.PollBatchRequest(api_key=key, batch_id=sub.batch_id))
    assert poll.status == pb.BATCH_STATUS_COMPLETED, poll
    assert [r.phone_number for r in poll.results] == ["+1 415-555-2671", "(415) 555-0100", "garbage"]
    assert poll.results[2].status == pb.NUMBER_STATUS_INVALID_NUMBER
    assert poll.completed + poll.failed + poll.pending == poll.total_numbers
    assert poll.HasField("completed_at")
    assert poll.results[0].line_type == pb.LINE_TYPE_FIXED_LINE_OR_MOBILE, poll.results[0]
    assert poll.results[2].line_type == pb.LINE_TYPE_UNSPECIFIED

    # One number while we wait, a deadline of our own.
    checked = stub.CheckNumber(
        pb.CheckNumberRequest(phone_number="020 7946 0958", country_code="44"), metadata=auth, timeout=10)
    assert checked.result.e164 == "+442079460958", checked
    assert checked.result.status != pb.NUMBER_STATUS_PENDING, checked
    assert checked.result.line_type == pb.LINE_TYPE_FIXED_LINE, checked
    assert checked.details.country_calling_code == 44 and checked.details.national_format == "020 7946 0958", checked
    assert checked.batch_id, checked

    balance = stub.GetBalance(pb.GetBalanceRequest(api_key=key)).credits
    try:
        stub.SubmitBatch(pb.SubmitBatchRequest(
            api_key=key, phone_numbers=[f"+1201555{i:04d}" for i in range(balance + 1)]))
        raise AssertionError("an uncoverable batch was accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        status = rpc_status.from_call(err)
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in status.details), status
        assert info.reason == "INSUFFICIENT_CREDITS", info
        assert info.metadata["required"] == str(balance + 1) and info.metadata["available"] == str(balance)

    try:
        stub.PollBatch(pb.PollBatchRequest(batch_id=sub.batch_id))
        raise AssertionError("a keyless poll was answered")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
