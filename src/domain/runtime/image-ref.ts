/**
 * `spec.runtime.image`: which image an agent's root filesystem comes from. Two forms, told apart by the first
 * characters (docs/adr/0060-image-cache-and-unpacking.md):
 *   - an OCI image layout directory: `oci:<path>`, `/abs/path`, `./rel/path` (relative to the directory holding
 *     agent.yaml; a relative path must stay inside it — no `..`);
 *   - otherwise an image in the local Docker Engine: `name[:tag]` in lowercase, as `aegis image build --tag` names
 *     it (nothing is ever pulled from a registry).
 */
import { isAbsolute, normalize } from '../paths.ts';

export type ImageRef =
  | { readonly kind: 'engine'; readonly name: string }
  | { readonly kind: 'layout'; readonly path: string };

/** `name[:tag]`, lowercase, as Docker accepts it. */
export const ENGINE_IMAGE_NAME =
  /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/;

/** Why `value` is not a valid `spec.runtime.image`, or undefined when it is. */
export function imageRefProblem(value: string): string | undefined {
  const layout = layoutPath(value);
  if (layout !== undefined) {
    if (layout === '') return 'an OCI layout path is empty (write oci:<dir>, ./<dir> or /<dir>)';
    if (!isAbsolute(layout) && layout.split('/').includes('..'))
      return `the OCI layout path "${layout}" leaves the agent directory ("..")`;
    return undefined;
  }
  if (!ENGINE_IMAGE_NAME.test(value))
    return `"${value}" is neither an image name (name[:tag], lowercase) nor an OCI layout path (oci:<dir>, ./<dir>, /<dir>)`;
  return undefined;
}

/** The layout path written in `value` (undefined: it names an engine image). */
function layoutPath(value: string): string | undefined {
  if (value.startsWith('oci:')) return value.slice('oci:'.length);
  if (value.startsWith('/') || value.startsWith('./')) return value;
  return undefined;
}

/** Parses a value the schema accepted; relative layout paths are resolved against `agentDir`. */
export function parseImageRef(value: string, agentDir: string): ImageRef {
  const layout = layoutPath(value);
  if (layout === undefined) return { kind: 'engine', name: value };
  return {
    kind: 'layout',
    path: isAbsolute(layout) ? normalize(layout) : normalize(`${agentDir}/${layout}`),
  };
}
