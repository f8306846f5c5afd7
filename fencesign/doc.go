// Package fencesign signs fence tokens so that a service receiving one over
// HTTP or gRPC can trust it.
//
// A fence forwarded in a Fence-Token header or fence-token metadata decides
// which writes a downstream service accepts (see sqlguard). Trusted as sent,
// anyone who can reach the route could record a huge fence for a resource
// and lock every legitimate holder out of it. With fencesign the sending
// side adds an HMAC-SHA-256 over the key, fence, owner, key id and expiry,
// made with a secret shared by the services; the receiving side checks it
// before the fence enters the request context.
//
// # Usage
//
//	keys := []fencesign.Key{{ID: "2026-12", Secret: secret}}
//	signer, err := fencesign.NewSigner(keys[0])              // calling side
//	verifier, err := fencesign.NewVerifier(keys)             // receiving side
//
//	httpmw.SignedTransport(http.DefaultTransport, signer)    // adds the header
//	httpmw.AcceptSignedFence(verifier)(handler)              // 401 on a bad one
//	grpcmw.UnaryAcceptSignedFence(verifier)                  // Unauthenticated
//
// # Token form
//
// A signed token is core.FenceToken.String followed by three parameters:
//
//	<fence>;owner=<id>;key=<escaped key>;kid=<key id>;exp=<unix seconds>;sig=<base64url MAC>
//
// A receiver that does not verify (core.ParseFenceToken) ignores them, so
// signing can be switched on at the senders first.
//
// # Rotation and expiry
//
// A Verifier holds several keys by id; a Signer signs with one. Rotate by
// adding the new key to every Verifier, then switching the Signers, then
// removing the old key. Tokens expire (default 30 seconds after signing,
// WithTTL): a captured token can be replayed only until then, and only for
// the same key, fence and owner, which the lock holder could send anyway.
// Expiry uses the wall clock, since sender and receiver share no other;
// WithLeeway allows for skew between their clocks (default 5 seconds).
//
// # Errors
//
// Verify's errors match ErrMalformed, ErrUnsigned, ErrUnknownKey,
// ErrBadSignature or ErrExpired, and all of them ErrInvalid, with
// errors.Is. Adapters answer any of them 401 / Unauthenticated.
package fencesign
