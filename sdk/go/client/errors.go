// Errors: every failure the service reports becomes a *RequestError carrying the gRPC code, the
// message, the offending field and the side at fault, from ErrorDetail or from a gRPC status.

package client

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"treadle/sdk/go/treadlev1"
)

// ErrClosed is returned for requests of a session (or client) that was closed.
var ErrClosed = errors.New("treadle: session closed")

// RequestError is a failed request or call: the gRPC code, the message (which starts with the
// offending field where there is one), the field's path and whether the user or the service is
// at fault. Errors of the Session stream and of unary calls both come back as *RequestError, so
// one errors.As covers every failure the service reports; status.Code(err) also works.
type RequestError struct {
	Code     codes.Code
	Message  string
	Field    string
	Category treadlev1.ErrorCategory
}

// Error formats the error as "CODE: message".
func (e *RequestError) Error() string {
	return CodeName(e.Code) + ": " + e.Message
}

// GRPCStatus lets status.FromError and status.Code read the error's code and message.
func (e *RequestError) GRPCStatus() *status.Status {
	return status.New(e.Code, e.Message)
}

// UserError reports whether retrying the request unchanged would fail again.
func (e *RequestError) UserError() bool {
	return e.Category == treadlev1.ErrorCategory_ERROR_CATEGORY_USER
}

// codeNames are the canonical gRPC code names, as ErrorDetail.code carries them.
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// CodeName is the canonical name of a gRPC code, e.g. "INVALID_ARGUMENT".
func CodeName(code codes.Code) string {
	if int(code) < len(codeNames) {
		return codeNames[code]
	}
	return fmt.Sprintf("CODE(%d)", uint32(code))
}

// codeFromName parses a canonical code name; unknown names give codes.Unknown.
func codeFromName(name string) codes.Code {
	for code, known := range codeNames {
		if known == name {
			return codes.Code(code)
		}
	}
	return codes.Unknown
}

// categoryOf guesses the side at fault from a code alone, as the Python SDK does.
func categoryOf(code codes.Code) treadlev1.ErrorCategory {
	if code == codes.Unavailable || code == codes.Internal {
		return treadlev1.ErrorCategory_ERROR_CATEGORY_SERVER
	}
	return treadlev1.ErrorCategory_ERROR_CATEGORY_USER
}

// errorFromDetail converts the ErrorDetail of an Error message.
func errorFromDetail(detail *treadlev1.ErrorDetail) *RequestError {
	code := codeFromName(detail.GetCode())
	category := detail.GetCategory()
	if category == treadlev1.ErrorCategory_ERROR_CATEGORY_UNSPECIFIED {
		category = categoryOf(code)
	}
	return &RequestError{
		Code:     code,
		Message:  detail.GetMessage(),
		Field:    detail.GetField(),
		Category: category,
	}
}

// errorFromStatus converts an error returned by grpc-go; errors without a gRPC status (and
// *RequestError itself) are returned unchanged.
func errorFromStatus(err error) error {
	if err == nil {
		return nil
	}
	var known *RequestError
	if errors.As(err, &known) {
		return err
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &RequestError{Code: s.Code(), Message: s.Message(), Category: categoryOf(s.Code())}
}

// invalid is a client-side INVALID_ARGUMENT naming the field, as the server would answer.
func invalid(field, format string, args ...any) *RequestError {
	return &RequestError{
		Code:     codes.InvalidArgument,
		Message:  field + ": " + fmt.Sprintf(format, args...),
		Field:    field,
		Category: treadlev1.ErrorCategory_ERROR_CATEGORY_USER,
	}
}
