//! The RFC 6962 / RFC 9162 Merkle tree over an export's lines, with SHA-256.
//! Its root, signed in the manifest, lets one line be proven part of the
//! export with a logarithmic audit path instead of the whole file. The
//! leaf and node prefixes (0x00, 0x01) keep a leaf from passing as a node.

use sha2::Digest as _;

use super::{Digest, sha256};

/// `H(0x00 ‖ data)`: the hash of one leaf (a line without its newline).
pub fn leaf_hash(data: &[u8]) -> Digest {
    let mut hasher = sha2::Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)`: the hash of an inner node.
fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = sha2::Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2): where RFC 6962 splits.
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root of the tree over `leaves` (the data, not yet hashed).
pub fn root<T: AsRef<[u8]>>(leaves: &[T]) -> Digest {
    let hashes: Vec<Digest> = leaves.iter().map(|leaf| leaf_hash(leaf.as_ref())).collect();
    root_of_leaves(&hashes)
}

/// The root of the tree whose leaf hashes are `leaf_hashes`; `H("")` when
/// there are none.
pub fn root_of_leaves(leaf_hashes: &[Digest]) -> Digest {
    match leaf_hashes {
        [] => sha256(b""),
        [only] => *only,
        _ => {
            let k = split(leaf_hashes.len());
            node_hash(
                &root_of_leaves(&leaf_hashes[..k]),
                &root_of_leaves(&leaf_hashes[k..]),
            )
        }
    }
}

/// The audit path of leaf `index` (0-based), leaf side first; `None` when
/// there is no such leaf.
pub fn audit_path(leaf_hashes: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= leaf_hashes.len() {
        return None;
    }
    let mut path = Vec::new();
    collect_path(leaf_hashes, index, &mut path);
    Some(path)
}

fn collect_path(leaf_hashes: &[Digest], index: usize, path: &mut Vec<Digest>) {
    if leaf_hashes.len() <= 1 {
        return;
    }
    let k = split(leaf_hashes.len());
    if index < k {
        collect_path(&leaf_hashes[..k], index, path);
        path.push(root_of_leaves(&leaf_hashes[k..]));
    } else {
        collect_path(&leaf_hashes[k..], index - k, path);
        path.push(root_of_leaves(&leaf_hashes[..k]));
    }
}

/// Whether `path` proves the leaf with hash `leaf` at `index` of a tree of
/// `tree_size` leaves has root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    tree_size: u64,
    leaf: &Digest,
    path: &[Digest],
    root: &Digest,
) -> bool {
    if index >= tree_size {
        return false;
    }
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("line {i}").into_bytes()).collect()
    }

    #[test]
    fn the_empty_tree_is_the_hash_of_nothing() {
        assert_eq!(
            hex::encode(root::<&[u8]>(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_tree_of_three_splits_after_two() {
        let data = leaves(3);
        let hashes: Vec<Digest> = data.iter().map(|d| leaf_hash(d)).collect();
        let expected = node_hash(&node_hash(&hashes[0], &hashes[1]), &hashes[2]);
        assert_eq!(root(&data), expected);
        assert_eq!(
            audit_path(&hashes, 2).unwrap(),
            vec![node_hash(&hashes[0], &hashes[1])]
        );
        assert_eq!(audit_path(&hashes, 0).unwrap(), vec![hashes[1], hashes[2]]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_leaf_of_a_tree_verifies_against_its_root(n in 1usize..300) {
            let hashes: Vec<Digest> = leaves(n).iter().map(|d| leaf_hash(d)).collect();
            let tree_root = root_of_leaves(&hashes);
            for (index, leaf) in hashes.iter().enumerate() {
                let path = audit_path(&hashes, index).unwrap();
                prop_assert!(verify_inclusion(index as u64, n as u64, leaf, &path, &tree_root));
            }
        }

        #[test]
        fn a_changed_leaf_index_or_path_element_fails(
            n in 2usize..300,
            pick in any::<prop::sample::Index>(),
            other in any::<prop::sample::Index>(),
            element in any::<prop::sample::Index>(),
        ) {
            let hashes: Vec<Digest> = leaves(n).iter().map(|d| leaf_hash(d)).collect();
            let tree_root = root_of_leaves(&hashes);
            let index = pick.index(n);
            let path = audit_path(&hashes, index).unwrap();
            let leaf = hashes[index];

            let changed_leaf = leaf_hash(b"an edited line");
            prop_assert!(!verify_inclusion(index as u64, n as u64, &changed_leaf, &path, &tree_root));

            let other_index = other.index(n);
            if other_index != index {
                prop_assert!(!verify_inclusion(other_index as u64, n as u64, &leaf, &path, &tree_root));
            }

            let mut forged = path.clone();
            let at = element.index(forged.len());
            forged[at][0] ^= 1;
            prop_assert!(!verify_inclusion(index as u64, n as u64, &leaf, &forged, &tree_root));

            let mut shorter = path.clone();
            shorter.pop();
            prop_assert!(!verify_inclusion(index as u64, n as u64, &leaf, &shorter, &tree_root));
            prop_assert!(!verify_inclusion(n as u64, n as u64, &leaf, &path, &tree_root));
        }
    }
}
