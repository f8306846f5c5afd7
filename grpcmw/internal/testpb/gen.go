// Package testpb is the generated code of the test service used by package
// grpcmw's tests (see counter.proto). Do not edit the .pb.go files.
package testpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative counter.proto
