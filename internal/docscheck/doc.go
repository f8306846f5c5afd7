// Package docscheck holds the tests that keep the repository's Markdown
// honest: the README's quick start is the Example in package core, every
// relative link resolves to a file in the repository, and every Go code
// block compiles. It has no API; run it with go test.
//
// # Marking code blocks
//
// A ```go block is either a whole program (it starts with a package clause)
// or is marked by an HTML comment on the line before it:
//
//	<!-- docscheck: fragment -->
//	    statements, compiled as the body of a function; packages are imported
//	    from the names they use, free identifiers (rdb, locker, mux, ...) are
//	    declared by the checker's prelude
//	<!-- docscheck: example core/example_test.go Example -->
//	    a whole program whose main body must equal that Example's body
//
// Blocks in other languages (sh, text, json, sql, mermaid) are not checked.
package docscheck
