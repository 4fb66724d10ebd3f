/**
 * `--input <json>` / `--input-file <file|->`, shared by `aegis run` (local) and `aegis exec` (server): the parsed
 * JSON, or undefined when neither flag was given. Errors are USAGE (exit 2) and say which flag and how to fix it.
 */
import { readFileSync } from 'node:fs';
import { AegisError } from '../domain/errors.ts';

export interface InputFlags {
  readonly input?: string;
  readonly inputFile?: string;
}

export function parseInputFlags(options: InputFlags): unknown {
  if (options.input !== undefined && options.inputFile !== undefined) {
    throw new AegisError('USAGE', '--input and --input-file are mutually exclusive', {
      hint: 'pass the JSON inline with --input, or put it in a file and use --input-file',
    });
  }
  let text: string | undefined = options.input;
  let where = '--input';
  if (options.inputFile !== undefined) {
    where = `--input-file ${options.inputFile}`;
    try {
      text = options.inputFile === '-' ? readFileSync(0, 'utf8') : readFileSync(options.inputFile, 'utf8');
    } catch (error) {
      throw new AegisError('USAGE', `cannot read ${options.inputFile}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new AegisError('USAGE', `${where} is not valid JSON: ${(error as Error).message}`, {
      hint: `quote it for the shell, e.g. --input '{"name": "Ada"}'`,
    });
  }
}
