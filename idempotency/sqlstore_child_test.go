package idempotency_test

const childEnv = "IDEMPOTENCY_TEST_CHILD"

func runChild() int { return 0 }
