import { executionStoreContract } from '../../../test/contracts/execution-store.contract.ts';
import { MemoryExecutionStore } from './memory-store.ts';

executionStoreContract('MemoryExecutionStore', async () => {
  const store = new MemoryExecutionStore();
  return { store, cleanup: () => store.close() };
});
