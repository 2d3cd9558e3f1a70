"""The contracts every part of Treadle reads from one place.

- `losses`: the loss table (names, required inputs, config keys with defaults and which are
  required) and the checks of a forward_backward's loss, config and inputs;
- `optim`: Adam(W) defaults and limits;
- `sampling`: the limits of a sampling request;
- `tokens`: the rule for token ids (non-negative, in the vocabulary, within the context);
- `transport`: message limits and keepalive of every gRPC connection.

The SDK checks a request with them before sending it, and the services check what arrives with
the same functions, so a client and a server can never disagree on what is accepted. Each check
raises treadle.errors.ValidationError naming the field; services answer it as INVALID_ARGUMENT.
This package needs nothing beyond the SDK's own dependencies (no torch, no grpc).
"""
