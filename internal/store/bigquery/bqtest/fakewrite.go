// Package bqtest is test support for the BigQuery store: an in-process
// BigQueryWrite (Storage Write API) server that the store's writer, the
// enrich worker's tests and the Beam pipeline's tests (module dataflow)
// write to, and that keeps the rows it acknowledged.
package bqtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Write is an in-process BigQueryWrite server: it keeps the rows of
// every acknowledged append, decoded with the writer schema that arrives on
// each connection's first AppendRows, as maps of column name to value
// (TIMESTAMP columns as int64 microseconds).
type Write struct {
	storagepb.UnimplementedBigQueryWriteServer

	mu      sync.Mutex
	rows    []map[string]any
	appends int // AppendRows requests received
	schemas int // writer schemas received (one per connection)
	// Hook, if set, sees each request's decoded rows before they are kept,
	// and may answer instead: a response (row errors) or an error that
	// ends the connection with that status.
	Hook  func(n int, rows []map[string]any) (*storagepb.AppendRowsResponse, error)
	table *storagepb.TableSchema
	// Addr is the server's host:port once Start has run.
	Addr string
}

// SetTable sets the table's schema: GetWriteStream reports it (FULL
// view), a writer schema with a field it lacks is refused as BigQuery does,
// and a response reports it as updated_schema when it has a column the
// connection's writer schema lacks.
func (f *Write) SetTable(ts *storagepb.TableSchema) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table = ts
}

// Start serves f on a loopback port until the test ends and returns client
// options that reach it.
func (f *Write) Start(t testing.TB) []option.ClientOption {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	storagepb.RegisterBigQueryWriteServer(srv, f)
	f.Addr = lis.Addr().String()
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return []option.ClientOption{
		option.WithEndpoint(lis.Addr().String()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

func (f *Write) GetWriteStream(ctx context.Context, req *storagepb.GetWriteStreamRequest) (*storagepb.WriteStream, error) {
	ws := &storagepb.WriteStream{Name: req.GetName(), Type: storagepb.WriteStream_COMMITTED, Location: "EU"}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetView() == storagepb.WriteStreamView_FULL && f.table != nil {
		ws.TableSchema = proto.CloneOf(f.table)
	}
	return ws, nil
}

func (f *Write) AppendRows(stream storagepb.BigQueryWrite_AppendRowsServer) error {
	var md protoreflect.MessageDescriptor
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		pr := req.GetProtoRows()
		if ws := pr.GetWriterSchema(); ws != nil {
			if md, err = messageDescriptor(ws.GetProtoDescriptor()); err != nil {
				return err
			}
			f.mu.Lock()
			f.schemas++
			table := f.table
			f.mu.Unlock()
			if table != nil {
				have := map[string]bool{}
				for _, c := range table.GetFields() {
					have[c.GetName()] = true
				}
				for i := range md.Fields().Len() {
					if name := string(md.Fields().Get(i).Name()); !have[name] {
						return status.Errorf(codes.InvalidArgument, "Input schema has more fields than BigQuery schema, extra fields: '%s'", name)
					}
				}
			}
		}
		if md == nil {
			return fmt.Errorf("fake: first AppendRows of a connection without a writer schema")
		}
		var rows []map[string]any
		for _, b := range pr.GetRows().GetSerializedRows() {
			m := dynamicpb.NewMessage(md)
			if err := proto.Unmarshal(b, m); err != nil {
				return fmt.Errorf("fake: decode row: %w", err)
			}
			row := map[string]any{}
			m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
				row[string(fd.Name())] = v.Interface()
				return true
			})
			rows = append(rows, row)
		}
		f.mu.Lock()
		f.appends++
		n, hook := f.appends, f.Hook
		f.mu.Unlock()
		if hook != nil {
			resp, err := hook(n, rows)
			if err != nil {
				return err
			}
			if resp != nil {
				if err := stream.Send(resp); err != nil {
					return err
				}
				continue
			}
		}
		f.mu.Lock()
		f.rows = append(f.rows, rows...)
		f.mu.Unlock()
		resp := &storagepb.AppendRowsResponse{
			Response: &storagepb.AppendRowsResponse_AppendResult_{AppendResult: &storagepb.AppendRowsResponse_AppendResult{}},
		}
		f.mu.Lock()
		if f.table != nil && len(f.table.GetFields()) > md.Fields().Len() {
			resp.UpdatedSchema = proto.CloneOf(f.table)
		}
		f.mu.Unlock()
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// messageDescriptor builds a message type from a self-contained descriptor.
func messageDescriptor(dp *descriptorpb.DescriptorProto) (protoreflect.MessageDescriptor, error) {
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:        proto.String("fake_writer_schema.proto"),
		Syntax:      proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{dp},
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("fake: writer schema: %w", err)
	}
	return fd.Messages().Get(0), nil
}

// Rows returns the rows of every acknowledged append, in order.
func (f *Write) Rows() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.rows...)
}

// Appends returns the number of AppendRows requests received.
func (f *Write) Appends() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.appends
}
