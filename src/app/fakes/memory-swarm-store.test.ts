import { swarmStoreContract } from '../../../test/contracts/swarm-store.contract.ts';
import { MemorySwarmStore } from './memory-swarm-store.ts';

swarmStoreContract('memory', async () => ({ store: new MemorySwarmStore(), close: async () => {} }));
