import { InMemoryDriver } from '../../../src/storage/driver/in-memory.js'
import { storageDriverSuite } from '../../suites/storage-driver.js'

storageDriverSuite('in-memory', { create: async () => new InMemoryDriver() })
