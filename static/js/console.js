// What every console page shares: signing out. Each page's own module does the rest.

import { signOut } from './api.js';

document.getElementById('sign-out').addEventListener('click', signOut);
