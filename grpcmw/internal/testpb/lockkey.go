package testpb

// LockKey makes TransferRequest key its own lock (grpcmw.MessageKey). It is
// how a service hand-writes a key for a message: a method next to the
// generated code, in the same package.
func (r *TransferRequest) LockKey() string {
	if r.GetFrom() == "" {
		return ""
	}
	return "account:" + r.GetFrom()
}
