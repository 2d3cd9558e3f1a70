package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"treadle/sdk/go/treadlev1"
)

func TestErrorFromDetailKeepsEveryPart(t *testing.T) {
	err := errorFromDetail(&treadlev1.ErrorDetail{
		Code:     "INVALID_ARGUMENT",
		Message:  "data[0].loss_fn_inputs.target_tokens: shape [3] does not match",
		Field:    "data[0].loss_fn_inputs.target_tokens",
		Category: treadlev1.ErrorCategory_ERROR_CATEGORY_USER,
	})
	if err.Code != codes.InvalidArgument || err.Field != "data[0].loss_fn_inputs.target_tokens" {
		t.Fatalf("code %v field %q", err.Code, err.Field)
	}
	if !err.UserError() {
		t.Fatal("a user error is not reported as one")
	}
	want := "INVALID_ARGUMENT: data[0].loss_fn_inputs.target_tokens: shape [3] does not match"
	if err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("status.Code = %v", status.Code(err))
	}
}

func TestErrorFromDetailFillsInCategoryAndUnknownCodes(t *testing.T) {
	server := errorFromDetail(&treadlev1.ErrorDetail{Code: "UNAVAILABLE", Message: "trainer lost"})
	if server.Code != codes.Unavailable || server.UserError() {
		t.Fatalf("UNAVAILABLE without a category: %+v", server)
	}
	odd := errorFromDetail(&treadlev1.ErrorDetail{Code: "NO_SUCH_CODE", Message: "?"})
	if odd.Code != codes.Unknown {
		t.Fatalf("an unknown code name gave %v", odd.Code)
	}
}

func TestEveryCodeNameRoundTrips(t *testing.T) {
	for code := codes.OK; code <= codes.Unauthenticated; code++ {
		if got := codeFromName(CodeName(code)); got != code {
			t.Errorf("%v -> %q -> %v", code, CodeName(code), got)
		}
	}
	if CodeName(codes.Unauthenticated) != "UNAUTHENTICATED" || CodeName(codes.Canceled) != "CANCELLED" {
		t.Fatal("code names are not the canonical ones")
	}
}

func TestErrorFromStatusMapsGRPCErrors(t *testing.T) {
	err := errorFromStatus(status.Error(codes.Unauthenticated, "invalid API key"))
	var failure *RequestError
	if !errors.As(err, &failure) || failure.Code != codes.Unauthenticated {
		t.Fatalf("errorFromStatus = %#v", err)
	}
	if err.Error() != "UNAUTHENTICATED: invalid API key" || !failure.UserError() {
		t.Fatalf("Error() = %q, user %v", err.Error(), failure.UserError())
	}
	if errorFromStatus(status.Error(codes.Internal, "boom")).(*RequestError).UserError() {
		t.Fatal("INTERNAL is reported as the user's fault")
	}
	wrapped := fmt.Errorf("step 3: %w", err)
	if errorFromStatus(wrapped) != wrapped || !errors.As(wrapped, &failure) {
		t.Fatal("a wrapped RequestError is not found again")
	}
	plain := errors.New("not from grpc")
	if errorFromStatus(plain) != plain || errorFromStatus(nil) != nil {
		t.Fatal("errors without a status are changed")
	}
}

func TestFutureWaitGivesUpOnContextButKeepsTheAnswer(t *testing.T) {
	future := newFuture("r1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := future.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait before the answer = %v", err)
	}
	answer := &treadlev1.Result{RequestId: "r1"}
	future.complete(answer, nil)
	future.complete(nil, ErrClosed) // a second answer (a re-sent request's) is ignored
	got, err := future.Wait(context.Background())
	if got != answer || err != nil {
		t.Fatalf("Wait = %v, %v", got, err)
	}
	failed := failedFuture(invalid("data", "at least one datum is required"))
	if _, err := failed.Wait(context.Background()); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("failed future = %v", err)
	}
}
