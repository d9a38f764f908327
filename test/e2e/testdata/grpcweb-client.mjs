// A real gRPC-Web client (Connect's, for Node) calling grpc.testing's
// TestService through strait: node grpcweb-client.mjs DESCRIPTORS URL 1.1|2
// prints what it got as JSON. The service comes from a FileDescriptorSet
// the Go test writes, so nothing is generated.
import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const [descriptors, baseUrl, httpVersion] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const service = registry.getService("grpc.testing.TestService");
const client = createClient(service, createGrpcWebTransport({ baseUrl, httpVersion }));

const unary = await client.unaryCall({ responseSize: 1000, payload: { body: new Uint8Array(5000) } });
const sizes = [];
for await (const m of client.streamingOutputCall({
  responseParameters: [{ size: 10 }, { size: 20, intervalUs: 100000 }, { size: 30, intervalUs: 100000 }],
})) {
  sizes.push(m.payload.body.length);
}
let error = null;
try {
  await client.unaryCall({ responseStatus: { code: 9, message: "precondition \u2603" } });
} catch (e) {
  error = { code: e.code, message: e.rawMessage };
}
console.log(JSON.stringify({ unary: unary.payload.body.length, stream: sizes, error }));
