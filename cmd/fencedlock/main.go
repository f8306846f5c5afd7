package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/redis/go-redis/v9"
)

// Exit codes: 0 success, 1 bad input or nothing to act on (unknown key, a
// refused confirmation), 2 the backend could not be reached.
const (
	exitOK          = 0
	exitInput       = 1
	exitUnreachable = 2
)

// errInput marks failures caused by the operator's input (exit 1).
var errInput = errors.New("fencedlock: bad input")

// unreachableError is a failure to reach the backend (exit 2); it names
// the address the operator gave.
type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("fencedlock: cannot reach %s: %v", e.addr, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

func main() {
	// go-redis logs every failed dial of its pool to stderr; the command
	// reports the failure itself, in one line naming the address.
	redis.SetLogger(quietRedis{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := (&cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}).run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// quietRedis discards go-redis's internal log.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// cli is one invocation's standard streams.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// run executes one command line and returns its exit code. Errors are
// printed as one line; a panic is turned into an error line, never a trace.
func (c *cli) run(ctx context.Context, args []string) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(c.stderr, "fencedlock: internal error: %v\n", r)
			code = exitUnreachable
		}
	}()
	err := c.dispatch(ctx, args)
	var unreach *unreachableError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &unreach):
		fmt.Fprintln(c.stderr, err)
		return exitUnreachable
	default:
		fmt.Fprintln(c.stderr, err)
		return exitInput
	}
}

var errHelp = errors.New("help requested")

func (c *cli) dispatch(ctx context.Context, args []string) error {
	g := newGlobals()
	fs := g.flagSet("fencedlock", c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return flagErr(err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(c.stderr, usage)
		return fmt.Errorf("%w: no command given", errInput)
	}
	cmd, cmdArgs := rest[0], rest[1:]
	switch cmd {
	case "ls":
		return c.ls(ctx, g, cmdArgs)
	case "show":
		return c.show(ctx, g, cmdArgs)
	case "release":
		return c.release(ctx, g, cmdArgs)
	case "watch":
		return c.watch(ctx, g, cmdArgs)
	case "bench":
		return c.bench(ctx, g, cmdArgs)
	case "help":
		fmt.Fprint(c.stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q (see fencedlock -h)", errInput, cmd)
}
