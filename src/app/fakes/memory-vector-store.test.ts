import { vectorStoreContract } from '../../../test/contracts/vector-store.contract.ts';
import { MemoryVectorStore } from './memory-vector-store.ts';

vectorStoreContract('MemoryVectorStore', async () => {
  const store = new MemoryVectorStore();
  return { store, cleanup: () => store.close() };
});
