// Package orderpb is the generated code of the example's Orders service
// (see orders.proto). Do not edit the .pb.go files.
package orderpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative orders.proto
