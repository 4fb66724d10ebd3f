/**
 * gRPC server reflection (`grpc.reflection.v1.ServerReflection` and the older `grpc.reflection.v1alpha`, which
 * grpcurl and some buf versions still ask for), so generic clients discover the API without the .proto files:
 * `buf curl --protocol grpc --http2-prior-knowledge --list-services http://127.0.0.1:7070`.
 *
 * Answers, on one bidirectional stream per client session:
 * - list_services: the services registered on the router (read when asked, so services added later are listed);
 * - file_by_filename / file_containing_symbol / file_containing_extension: serialized FileDescriptorProtos of the
 *   file and its transitive dependencies (those already sent on this stream are not repeated, as the protocol
 *   allows), from the descriptors protoc-gen-es embeds in the generated code;
 * - all_extension_numbers_of_type: the extension numbers known for a message type;
 * - anything unknown: an error_response (NOT_FOUND / INVALID_ARGUMENT), and the stream stays open.
 *
 * No API key: reflection reveals only the API's schema, which is public anyway (GET /openapi.json, proto/); calling
 * an RPC found through it still needs a key (ADR 0055). Requests are capped at 64 KiB each (the server's gRPC cap
 * is sized for bundle uploads) and at 1,000 per stream, so one anonymous stream can't be fed forever.
 */
import {
  createRegistry,
  type DescExtension,
  type DescFile,
  type DescService,
  type Registry,
  toBinary,
} from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import { ServerReflection as ServerReflectionV1 } from './gen/grpc/reflection/v1/reflection_pb.ts';
import { ServerReflection as ServerReflectionV1alpha } from './gen/grpc/reflection/v1alpha/reflection_pb.ts';

/** Largest reflection request accepted (a symbol or file name; real ones are < 200 bytes). */
export const REFLECTION_MAX_REQUEST_BYTES = 64 * 1024;
/** Requests answered on one stream; a client needs a few dozen at most. */
export const REFLECTION_MAX_REQUESTS_PER_STREAM = 1000;

/** The request as both protocol versions shape it (their generated types differ only in their type names). */
interface ReflectionRequest {
  readonly host: string;
  readonly messageRequest:
    | {
        case: 'fileByFilename' | 'fileContainingSymbol' | 'allExtensionNumbersOfType' | 'listServices';
        value: string;
      }
    | { case: 'fileContainingExtension'; value: { containingType: string; extensionNumber: number } }
    | { case: undefined; value?: undefined };
}

/** The answer's oneof, as init objects both versions accept. */
type ReflectionAnswer =
  | { case: 'fileDescriptorResponse'; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: 'allExtensionNumbersResponse'; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: 'listServicesResponse'; value: { service: { name: string }[] } }
  | { case: 'errorResponse'; value: { errorCode: number; errorMessage: string } };

/**
 * Registers both reflection services on `router`. Call it after (or before) the API services: what it lists is
 * read from `router.handlers` on each request.
 */
export function registerReflection(router: ConnectRouter): void {
  const options = { readMaxBytes: REFLECTION_MAX_REQUEST_BYTES };
  const index = lazyIndex(router);
  router.service(
    ServerReflectionV1,
    {
      async *serverReflectionInfo(requests, call) {
        for await (const request of session(requests, index, call)) {
          yield {
            validHost: request.request.host,
            originalRequest: request.request,
            messageResponse: request.answer,
          };
        }
      },
    },
    options,
  );
  router.service(
    ServerReflectionV1alpha,
    {
      async *serverReflectionInfo(requests, call) {
        for await (const request of session(requests, index, call)) {
          yield {
            validHost: request.request.host,
            originalRequest: request.request,
            messageResponse: request.answer,
          };
        }
      },
    },
    options,
  );
}

/** What reflection knows: the registered services, their files (with dependencies) and every symbol in them. */
interface ReflectionIndex {
  readonly services: readonly string[];
  readonly files: ReadonlyMap<string, DescFile>;
  readonly registry: Registry;
}

/** Built on first use (all services are registered by then) and kept: the router doesn't change after start. */
function lazyIndex(router: ConnectRouter): () => ReflectionIndex {
  let built: ReflectionIndex | undefined;
  return () => {
    if (built !== undefined) return built;
    const services = new Map<string, DescService>();
    for (const handler of router.handlers) services.set(handler.service.typeName, handler.service);
    const files = new Map<string, DescFile>();
    const add = (file: DescFile): void => {
      if (files.has(file.proto.name)) return;
      files.set(file.proto.name, file);
      for (const dependency of file.dependencies) add(dependency);
    };
    for (const service of services.values()) add(service.file);
    built = {
      services: [...services.keys()].sort(),
      files,
      registry: createRegistry(...files.values()),
    };
    return built;
  };
}

async function* session<R extends ReflectionRequest>(
  requests: AsyncIterable<R>,
  index: () => ReflectionIndex,
  call: HandlerContext,
): AsyncGenerator<{ request: R; answer: ReflectionAnswer }> {
  /** Files sent on this stream: their dependencies aren't sent again. */
  const sent = new Set<string>();
  let count = 0;
  for await (const request of requests) {
    if (call.signal.aborted) return;
    count += 1;
    if (count > REFLECTION_MAX_REQUESTS_PER_STREAM) {
      throw new ConnectError(
        `more than ${REFLECTION_MAX_REQUESTS_PER_STREAM} reflection requests on one stream; open a new stream`,
        Code.ResourceExhausted,
      );
    }
    yield { request, answer: answer(request, index(), sent) };
  }
}

/** The answer to one request; never throws. */
export function answer(
  request: ReflectionRequest,
  index: ReflectionIndex,
  sent: Set<string>,
): ReflectionAnswer {
  const { messageRequest } = request;
  switch (messageRequest.case) {
    case 'listServices':
      return { case: 'listServicesResponse', value: { service: index.services.map((name) => ({ name })) } };
    case 'fileByFilename': {
      const file = index.files.get(messageRequest.value);
      if (file === undefined) {
        return notFound(`no file named ${quote(messageRequest.value)}; list_services, then ask by symbol`);
      }
      return files(file, sent);
    }
    case 'fileContainingSymbol': {
      const file = fileOfSymbol(index.registry, messageRequest.value);
      if (file === undefined) {
        return notFound(
          `no symbol ${quote(messageRequest.value)}; give a fully-qualified name such as aegis.v1.AgentService`,
        );
      }
      return files(file, sent);
    }
    case 'fileContainingExtension': {
      const { containingType, extensionNumber } = messageRequest.value;
      const extension = extensionsOf(index.registry, containingType).find(
        (e) => e.number === extensionNumber,
      );
      if (extension === undefined) {
        return notFound(`no extension ${extensionNumber} of ${quote(containingType)}`);
      }
      return files(extension.file, sent);
    }
    case 'allExtensionNumbersOfType': {
      const typeName = messageRequest.value;
      if (index.registry.getMessage(typeName) === undefined) {
        return notFound(`no message type ${quote(typeName)}`);
      }
      return {
        case: 'allExtensionNumbersResponse',
        value: {
          baseTypeName: typeName,
          extensionNumber: extensionsOf(index.registry, typeName).map((e) => e.number),
        },
      };
    }
    default:
      return {
        case: 'errorResponse',
        value: {
          errorCode: Code.InvalidArgument,
          errorMessage:
            'the request sets none of file_by_filename, file_containing_symbol, file_containing_extension, ' +
            'all_extension_numbers_of_type or list_services',
        },
      };
  }
}

/** The file declaring a message, enum, extension, service or method (`pkg.Service.Method`). */
function fileOfSymbol(registry: Registry, symbol: string): DescFile | undefined {
  const found = registry.get(symbol);
  if (found !== undefined) return found.file;
  const dot = symbol.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const service = registry.getService(symbol.slice(0, dot));
  const method = symbol.slice(dot + 1);
  return service?.methods.some((m) => m.name === method) ? service.file : undefined;
}

function extensionsOf(registry: Registry, typeName: string): DescExtension[] {
  const found: DescExtension[] = [];
  for (const type of registry) {
    if (type.kind === 'extension' && type.extendee.typeName === typeName) found.push(type);
  }
  return found;
}

/** `file` and those of its transitive dependencies not yet sent on this stream; `file` itself always. */
function files(file: DescFile, sent: Set<string>): ReflectionAnswer {
  const out: Uint8Array[] = [];
  const seen = new Set<string>();
  const visit = (current: DescFile, requested: boolean): void => {
    if (seen.has(current.proto.name)) return;
    seen.add(current.proto.name);
    if (!requested && sent.has(current.proto.name)) return;
    sent.add(current.proto.name);
    out.push(toBinary(FileDescriptorProtoSchema, current.proto));
    for (const dependency of current.dependencies) visit(dependency, false);
  };
  visit(file, true);
  return { case: 'fileDescriptorResponse', value: { fileDescriptorProto: out } };
}

function notFound(message: string): ReflectionAnswer {
  return { case: 'errorResponse', value: { errorCode: Code.NotFound, errorMessage: message } };
}

/** A client-supplied name in a message: JSON-quoted, and cut (the request may be up to 64 KiB). */
function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
}
