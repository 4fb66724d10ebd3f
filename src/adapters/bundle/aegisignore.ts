/**
 * `.aegisignore` rules: one implementation, the SDK's (`sdk/aegisignore.ts`, pure and dependency-free), so the CLI's
 * packer and the SDK's `packAgent` can never disagree about which files stay out of a bundle.
 */
export { IgnoreRules } from '../../../sdk/aegisignore.ts';
